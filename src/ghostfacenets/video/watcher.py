"""``VideoWatcher``: faces in a video, tracked, identified once per track, as events.

Every ``detect_every``-th sampled frame is a detection frame: faces are detected, aligned and embedded with the
recognizer's own stages (``detect``, ``align``, ``embed_aligned``) and associated with the tracks
(:mod:`~ghostfacenets.video.tracking`); in the frames between, the tracks are followed by optical flow
(:mod:`~ghostfacenets.video.motion`). Identities come from the gallery (:mod:`~ghostfacenets.video.identity`).
No frame, crop or photo is kept: a track holds its box, its few best embeddings and a 24x24 grey patch.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    announced: tuple[int | None, bool] | None = None  # (subject id, decided) last put in an event


class VideoWatcher:
    """Faces in videos with one decision per person per track.

    ``recognizer``: a :class:`~ghostfacenets.pipeline.FaceRecognizer` (its detector, alignment and model).
    ``store``/``gallery``: where identities come from (a :class:`GalleryStore`, or what ``--db`` takes; None: no
    identities, only tracks). ``threshold``/``far``: the decision threshold (default: the recognizer's).
    ``detect_every``: detect in every n-th sampled frame and follow faces by optical flow in between (1: detect in
    every sampled frame). ``tracker``: :class:`TrackerSettings`. ``k``: gallery subjects kept per track.
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
    ) -> None:
        if detect_every < 1:
            raise GhostFaceNetsError(f"detect_every must be at least 1, got {detect_every}")
        self.recognizer = recognizer
        self.store = store
        self.gallery = gallery
        self.threshold = recognizer.threshold(threshold, far)
        settings = tracker or TrackerSettings()
        if settings.same_person is None:
            from dataclasses import replace

            settings = replace(settings, same_person=self.threshold.value)
        self.settings = settings
        self.detect_every = detect_every
        self.k = k
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
    def _sightings(self, frame: Frame) -> list[Sighting]:
        recognizer = self.recognizer
        started = time.perf_counter()
        faces = [f for f in recognizer.detect(frame.pixels) if f.score >= self.settings.low_threshold]
        detected = time.perf_counter()
        self.times.detect += detected - started
        if not faces:
            return []
        crops = np.stack([recognizer.align(frame.pixels, f) for f in faces])
        embeddings = recognizer.embed_aligned(crops)
        embedded = time.perf_counter()
        self.times.embed += embedded - detected
        self.times.faces_embedded += len(faces)
        sightings = [
            Sighting(frame.time, frame.index, f.box, f.landmarks, f.score, face_quality(f, crop, faces), embedding)
            for f, crop, embedding in zip(faces, crops, embeddings)
        ]
        self.times.track += time.perf_counter() - embedded  # the quality is tracking work
        return sightings

    def _event(self, kind: str, track: Track, frame: Frame, state: _State, source: str, judged: bool) -> TrackEvent:
        identity = None
        if judged:
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
    def watch(self, source: VideoSource | str | Path | int | bytes, progress: bool = False) -> Iterator[TrackEvent]:
        """The events of ``source`` (a :class:`VideoSource`, or anything it takes, sampled at the default
        ``fps``), as they happen. ``times`` holds the stage times as the video goes. ``progress``: a progress bar
        on stderr for a file. When the source fails or the watch is interrupted, the open tracks leave first."""
        if not isinstance(source, VideoSource):
            source = VideoSource(source, fps=DEFAULT_FPS)
        self.times = StageTimes()
        tracker = FaceTracker(self.settings)
        states: dict[int, _State] = {}
        previous: GreyFrame | None = None
        last: Frame | None = None
        bar = None
        with self._judge() as judge:
            frames = source.frames()
            try:
                for n, frame in enumerate(frames):
                    if bar is None and progress:
                        bar = _progress_bar(source)
                    grey = grey_frame(frame.pixels) if self.detect_every > 1 else None
                    yield from self._step(
                        frame, n % self.detect_every == 0, tracker, states, judge, previous, grey, last, source.name
                    )
                    previous, last = grey, frame
                    self.times.frames_analysed += 1
                    self.times.video_seconds = frame.time
                    if bar is not None:
                        bar.update(max(0.0, round(frame.time - bar.n, 2)))
            except (GhostFaceNetsError, KeyboardInterrupt):
                if last is not None:
                    for track in tracker.finish():
                        yield from self._left(track, last, states, judge, source.name)
                raise
            finally:
                self.times.decode = source.stats.decode_s
                self.times.frames_decoded = source.stats.decoded
                if bar is not None:
                    bar.close()
                frames.close()
            if last is not None:
                for track in tracker.finish():
                    yield from self._left(track, last, states, judge, source.name)

    def _step(
        self,
        frame: Frame,
        detecting: bool,
        tracker: FaceTracker,
        states: dict[int, _State],
        judge: IdentityJudge | None,
        previous: GreyFrame | None,
        grey: GreyFrame | None,
        last: Frame | None,
        name: str,
    ) -> Iterator[TrackEvent]:
        """One sampled frame: detect (or follow), associate, decide, and the events that follow."""
        if detecting:
            self.times.detection_frames += 1
            sightings = self._sightings(frame)
            started = time.perf_counter()
            changes = tracker.update(frame.time, frame.index, sightings)
            if grey is not None:
                for track in changes.seen:
                    track.patch = face_patch(grey, track.box)
        else:
            started = time.perf_counter()
            followed = [t for t in tracker.tracks if not t.lost and last is not None and t.end_frame == last.index]
            moves = (
                follow(previous, grey, [(t.box, t.landmarks, t.patch) for t in followed]) if previous and grey else []
            )
            moved = {t.id: (m.box, m.landmarks) for t, m in zip(followed, moves) if m.box is not None}
            changes = tracker.move(frame.time, frame.index, moved)  # type: ignore[arg-type]
        events = [
            self._event("appeared", t, frame, states.setdefault(t.id, _State()), name, False) for t in changes.appeared
        ]
        if judge is not None and detecting:
            events += self._identify(judge, tracker, states, frame, name)
        for track in changes.left:
            events += self._left(track, frame, states, judge, name)
        self.times.track += time.perf_counter() - started
        return iter(events)

    def _identify(
        self, judge: IdentityJudge, tracker: FaceTracker, states: dict[int, _State], frame: Frame, name: str
    ) -> Iterator[TrackEvent]:
        """Decide the identities of the tracks seen in this frame; an event for each new or changed decision of a
        track with ``min_faces`` embedded sightings."""
        visible = [t for t in tracker.visible if t.end_frame == frame.index]
        for track_id, identity in judge.decide(visible).items():
            states[track_id].identity = identity
        for track in visible:
            state = states[track.id]
            if state.identity is None or track.embedded < self.settings.min_faces:
                continue
            key = (state.identity.subject_id, True)
            if state.announced != key:
                state.announced = key
                yield self._event("identified", track, frame, state, name, True)

    def _left(
        self, track: Track, frame: Frame, states: dict[int, _State], judge: IdentityJudge | None, name: str
    ) -> Iterator[TrackEvent]:
        state = states.pop(track.id, _State())
        if judge is not None:
            judge.forget(track)
        yield self._event("left", track, frame, state, name, judge is not None)

    def analyze(self, source: VideoSource | str | Path | bytes, progress: bool = False) -> VideoAnalysis:
        """Every event of a video file (see :meth:`watch`)."""
        if not isinstance(source, VideoSource):
            source = VideoSource(source, fps=DEFAULT_FPS)
        events = list(self.watch(source, progress))
        assert source.info is not None
        return VideoAnalysis(source.info, events, self.times)


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
