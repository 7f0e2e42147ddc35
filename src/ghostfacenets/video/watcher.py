"""``VideoWatcher``: faces in a video, tracked, identified once per track, as events.

Every ``detect_every``-th sampled frame is a detection frame: faces are detected, aligned and embedded with the
recognizer's own stages (``detect``, ``align``, ``embed_aligned``) and associated with the tracks
(:mod:`~ghostfacenets.video.tracking`); in the frames between, the tracks are followed by optical flow
(:mod:`~ghostfacenets.video.motion`). Identities come from the gallery (:mod:`~ghostfacenets.video.identity`).
No frame, crop or photo is kept: a track holds its box, its few best embeddings and a 24x24 grey patch (and, only
when asked with ``crops``, the aligned crops of those few best sightings, in memory while the track lasts).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import GhostFaceNetsError
from ..gallery import DEFAULT_GALLERY, GalleryStore, open_store
from ..gallery.base import check_model
from .events import TrackEvent
from .identity import Identity, IdentityJudge
from .motion import GreyFrame, face_patch, follow, grey_frame
from .quality import face_quality
from .source import Frame, VideoInfo, VideoSource
from .tracking import FaceTracker, Sighting, Track, TrackerSettings

if TYPE_CHECKING:
    from ..pipeline.recognizer import FaceRecognizer

DEFAULT_FPS = 10.0
DEFAULT_DETECT_EVERY = 2


@dataclass
class StageTimes:
    """Seconds spent per stage, and the frames and faces they handled."""

    decode: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    track: float = 0.0
    frames_decoded: int = 0
    frames_analysed: int = 0
    detection_frames: int = 0
    faces_embedded: int = 0
    video_seconds: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.detect + self.embed + self.track

    def to_dict(self) -> dict[str, Any]:
        total = self.total or 1e-12
        return {
            "seconds": {k: round(getattr(self, k), 4) for k in ("decode", "detect", "embed", "track", "total")},
            "share": {k: round(getattr(self, k) / total, 4) for k in ("decode", "detect", "embed", "track")},
            "frames_decoded": self.frames_decoded,
            "frames_analysed": self.frames_analysed,
            "detection_frames": self.detection_frames,
            "faces_embedded": self.faces_embedded,
            "video_seconds": round(self.video_seconds, 3),
            "realtime_factor": round(self.video_seconds / total, 3) if self.total else None,
        }


@dataclass
class VideoAnalysis:
    """A whole video's result: its ``info``, every ``event`` in order, the ``tracks`` (each one's "left" event)
    and the stage ``times``."""

    info: VideoInfo
    events: list[TrackEvent] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)

    @property
    def tracks(self) -> list[TrackEvent]:
        return [e for e in self.events if e.event == "left"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.info.to_dict(),
            "tracks": [e.to_dict() for e in self.tracks],
            "events": [e.to_dict() for e in self.events],
            "times": self.times.to_dict(),
        }


@dataclass
class _State:
    """What the watcher knows of one track beyond the tracker: its current and its announced identity."""

    identity: Identity | None = None
    decided: bool = False  # an "identified" event was sent
    announced: int | None = None  # the subject it named (None: an unknown person)


@dataclass
class _Run:
    """One watch: the tracker, the judge, each track's state, the previous frame (grey, for optical flow) and the
    frames followed since the last detection (to find when a new face really appeared)."""

    tracker: FaceTracker
    judge: IdentityJudge | None
    name: str
    ended: Callable[[Track], None] | None = None
    states: dict[int, _State] = field(default_factory=dict)
    previous: GreyFrame | None = None
    last: Frame | None = None
    between: list[tuple[float, int, GreyFrame]] = field(default_factory=list)


class VideoWatcher:
    """Faces in videos with one decision per person per track.

    ``recognizer``: a :class:`~ghostfacenets.pipeline.FaceRecognizer` (its detector, alignment and model).
    ``store``/``gallery``: where identities come from (a :class:`GalleryStore`, or what ``--db`` takes; None: no
    identities, only tracks). ``threshold``/``far``: the decision threshold (default: the recognizer's).
    ``detect_every``: detect in every n-th sampled frame and follow faces by optical flow in between (1: detect in
    every sampled frame). ``tracker``: :class:`TrackerSettings`. ``k``: gallery subjects kept per track.
    ``crops``: keep the aligned 112x112 crop of each track's best sightings (``Track.best``; in memory, for
    :func:`~ghostfacenets.video.index.index_video`).
    """

    def __init__(
        self,
        recognizer: FaceRecognizer,
        store: GalleryStore | str | Path | None = None,
        gallery: str = DEFAULT_GALLERY,
        *,
        threshold: float | None = None,
        far: float | None = None,
        detect_every: int = DEFAULT_DETECT_EVERY,
        tracker: TrackerSettings | None = None,
        k: int = 5,
        crops: bool = False,
    ) -> None:
        if detect_every < 1:
            raise GhostFaceNetsError(f"detect_every must be at least 1, got {detect_every}")
        self.recognizer = recognizer
        self.store = store
        self.gallery = gallery
        self.threshold = recognizer.threshold(threshold, far)
        settings = tracker or TrackerSettings()
        if settings.same_person is None:
            settings = replace(settings, same_person=self.threshold.value)
        self.settings = settings
        self.detect_every = detect_every
        self.k = k
        self.crops = crops
        self.times = StageTimes()

    @contextlib.contextmanager
    def _judge(self) -> Iterator[IdentityJudge | None]:
        if self.store is None:
            yield None
            return
        opened: contextlib.AbstractContextManager[GalleryStore]
        if isinstance(self.store, (str, Path)):
            opened = open_store(self.store, create=False)
        else:
            opened = contextlib.nullcontext(self.store)
        with opened as store:
            check_model(self.gallery, store.gallery(self.gallery).model, self.recognizer.model_id)
            yield IdentityJudge(store, self.gallery, self.recognizer.model_id, self.threshold.value, self.k)

    # ------------------------------------------------------------------------------------------------ stages
    def _sightings(self, frame: Frame, tracker: FaceTracker) -> list[Sighting]:
        """The frame's faces with their quality, embedded where the tracker wants them (:meth:`FaceTracker.wanted`)."""
        recognizer = self.recognizer
        started = time.perf_counter()
        faces = [f for f in recognizer.detect(frame.pixels) if f.score >= self.settings.low_threshold]
        detected = time.perf_counter()
        self.times.detect += detected - started
        if not faces:
            return []
        crops = [recognizer.align(frame.pixels, f) for f in faces]
        sightings = [
            Sighting(frame.time, frame.index, f.box, f.landmarks, f.score, face_quality(f, crop, faces))
            for f, crop in zip(faces, crops)
        ]
        wanted = [i for i, want in enumerate(tracker.wanted(frame.time, sightings)) if want]
        judged = time.perf_counter()
        self.times.track += judged - detected  # alignment for the quality, and the choice
        if wanted:
            embeddings = recognizer.embed_aligned(np.stack([crops[i] for i in wanted]))
            for i, embedding in zip(wanted, embeddings):
                sightings[i].embedding = embedding
                if self.crops:
                    sightings[i].crop = crops[i]
            self.times.faces_embedded += len(wanted)
        self.times.embed += time.perf_counter() - judged
        return sightings

    def _event(self, kind: str, track: Track, frame: Frame, state: _State, source: str) -> TrackEvent:
        """An event of ``track`` at ``frame``; with a gallery, and after "appeared", with its identity."""
        identity = None
        if self.store is not None and kind != "appeared":
            identity = state.identity or Identity(None, None, None, self.threshold.value)
        return TrackEvent(
            kind,
            track.id,
            frame.time,
            frame.index,
            track.start,
            track.end,
            track.box.copy(),
            track.score,
            track.quality,
            track.embedded,
            identity,
            source,
            frame.wall_time,
        )

    # ------------------------------------------------------------------------------------------------ the loop
    def watch(
        self,
        source: VideoSource | str | Path | int | bytes,
        progress: bool = False,
        ended: Callable[[Track], None] | None = None,
    ) -> Iterator[TrackEvent]:
        """The events of ``source`` (a :class:`VideoSource`, or anything it takes, sampled at the default
        ``fps``), as they happen. ``times`` holds the stage times as the video goes. ``progress``: a progress bar
        on stderr for a file. ``ended(track)``: called with each track as it leaves, before its "left" event.
        When the source fails or the watch is interrupted, the open tracks leave first."""
        if not isinstance(source, VideoSource):
            source = VideoSource(source, fps=DEFAULT_FPS)
        self.times = StageTimes()
        bar = None
        with self._judge() as judge:
            run = _Run(FaceTracker(self.settings), judge, source.name, ended)
            frames = source.frames()
            try:
                for n, frame in enumerate(frames):
                    if bar is None and progress:
                        bar = _progress_bar(source)
                    yield from self._step(run, frame, n % self.detect_every == 0)
                    self.times.frames_analysed += 1
                    self.times.video_seconds = frame.time
                    if bar is not None:
                        bar.update(max(0.0, round(frame.time - bar.n, 2)))
            except (GhostFaceNetsError, KeyboardInterrupt):
                yield from self._finish(run)
                raise
            finally:
                self.times.decode = source.stats.decode_s
                self.times.frames_decoded = source.stats.decoded
                if bar is not None:
                    bar.close()
                frames.close()
            yield from self._finish(run)

    def _step(self, run: _Run, frame: Frame, detecting: bool) -> list[TrackEvent]:
        """One sampled frame: detect (or follow), associate, decide; the events that follow."""
        tracker = run.tracker
        grey = grey_frame(frame.pixels) if self.detect_every > 1 else None
        if detecting:
            self.times.detection_frames += 1
            sightings = self._sightings(frame, tracker)
            started = time.perf_counter()
            changes = tracker.update(frame.time, frame.index, sightings)
            if grey is not None:
                for track in changes.seen + changes.started:
                    track.patch = face_patch(grey, track.box)
                for track in changes.started:
                    _backfill(track, grey, run.between)
            run.between.clear()
        else:
            started = time.perf_counter()
            last = run.last
            followed = [t for t in tracker.tracks if not t.lost and last is not None and t.end_frame == last.index]
            followed = [t for t in followed if not any(_touch(t.box, o.box) for o in followed if o is not t)]
            faces = [(t.box, t.landmarks, t.patch) for t in followed]
            moves = follow(run.previous, grey, faces) if run.previous is not None and grey is not None else []
            moved = {
                t.id: (m.box, m.landmarks)
                for t, m in zip(followed, moves)
                if m.box is not None and m.landmarks is not None
            }
            changes = tracker.move(frame.time, frame.index, moved)
            if grey is not None:
                run.between.append((frame.time, frame.index, grey))
        events = []
        for track in changes.appeared:
            events.append(self._event("appeared", track, frame, run.states.setdefault(track.id, _State()), run.name))
        if run.judge is not None and detecting:
            events += self._identify(run, frame)
        for track in changes.left:
            events.append(self._left(run, track, frame))
        run.previous, run.last = grey, frame
        self.times.track += time.perf_counter() - started
        return events

    def _identify(self, run: _Run, frame: Frame) -> list[TrackEvent]:
        """Decide the identities of the tracks seen in this frame; an event for each new or changed decision of a
        track with ``min_faces`` embedded sightings."""
        assert run.judge is not None
        visible = [t for t in run.tracker.visible if t.end_frame == frame.index]
        for track_id, identity in run.judge.decide(visible).items():
            run.states[track_id].identity = identity
        events = []
        for track in visible:
            state = run.states[track.id]
            if state.identity is None or track.embedded < self.settings.min_faces:
                continue
            if state.announced != state.identity.subject_id or not state.decided:
                state.announced, state.decided = state.identity.subject_id, True
                events.append(self._event("identified", track, frame, state, run.name))
        return events

    def _left(self, run: _Run, track: Track, frame: Frame) -> TrackEvent:
        state = run.states.pop(track.id, _State())
        if run.ended is not None:
            run.ended(track)
        if run.judge is not None:
            run.judge.forget(track)
        return self._event("left", track, frame, state, run.name)

    def _finish(self, run: _Run) -> Iterator[TrackEvent]:
        """Every open track leaves, at the last frame."""
        if run.last is not None:
            for track in run.tracker.finish():
                yield self._left(run, track, run.last)

    def analyze(self, source: VideoSource | str | Path | bytes, progress: bool = False) -> VideoAnalysis:
        """Every event of a video file (see :meth:`watch`)."""
        if not isinstance(source, VideoSource):
            source = VideoSource(source, fps=DEFAULT_FPS)
        events = list(self.watch(source, progress))
        assert source.info is not None
        return VideoAnalysis(source.info, events, self.times)


def _backfill(track: Track, grey: GreyFrame, between: list[tuple[float, int, GreyFrame]]) -> None:
    """A face first detected now may have been there in the frames followed since the last detection: follow it
    back through them while it stays itself, and start its track at the earliest (times within one sampled frame
    whatever ``detect_every`` is)."""
    box, landmarks, current = track.box, track.landmarks, grey
    for when, index, earlier in reversed(between):
        (motion,) = follow(current, earlier, [(box, landmarks, track.patch)])
        if motion.box is None or motion.landmarks is None:
            return
        box, landmarks, current = motion.box, motion.landmarks, earlier
        track.start, track.start_frame = when, index


def _touch(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two boxes overlap: optical flow cannot tell two faces covering each other apart, so neither is
    followed until the next detection."""
    return bool(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))


def _progress_bar(source: VideoSource) -> Any:
    from tqdm import tqdm

    info = source.info
    total = None if info is None or info.live else info.duration
    return tqdm(
        total=round(total, 2) if total else None,
        unit="s",
        desc="video",
        disable=not sys.stderr.isatty() or total is None,
        leave=False,
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]",
    )
