"""A video's faces into a people library: every track becomes one unlabelled face, grouped into people.

    from ghostfacenets.gallery import open_store
    from ghostfacenets.people import PeopleLibrary
    from ghostfacenets.pipeline import FaceRecognizer
    from ghostfacenets.video.index import index_video

    recognizer = FaceRecognizer()
    with open_store("library.sqlite") as store:
        library = PeopleLibrary(store, "family", recognizer)
        summary = index_video("party.mp4", library)     # again: nothing added, the video is known

A track's face is its identity embedding (the L2-normalised mean of its best sightings' embeddings,
``Track.embedding``), with the people quality, box and detector score of its best sighting, whose time gives the
reference (``party.mp4@12.36s (track 7)``). Each track is a photo of its own (a key from the video's sha256 and the
track), so two tracks of one person (someone who leaves and comes back) may join one person; the video itself is
recorded as a photo without faces under the sha256 of its bytes once every track is in, so that a re-run skips it
before decoding. No frame is stored; the best sighting's aligned crop only with ``store_crops``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import GhostFaceNetsError
from ..files import sha256_file
from ..people import GroupingSummary, PeopleLibrary, PhotoFaces
from ..pipeline.detect import Face
from .source import VideoSource
from .watcher import DEFAULT_FPS, VideoWatcher

if TYPE_CHECKING:
    from .tracking import BestFace, Track


@dataclass
class VideoIndexSummary:
    """What :func:`index_video` did with one video: ``tracks`` found, ``faces_added`` (one per new track),
    ``tracks_skipped`` (held from an earlier, interrupted run), ``already_indexed`` (the whole video was known and
    not decoded), ``seconds`` of video analysed and the ``grouping`` of the new faces when asked."""

    video: str
    tracks: int = 0
    faces_added: int = 0
    tracks_skipped: int = 0
    already_indexed: bool = False
    seconds: float = 0.0
    grouping: GroupingSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "tracks": self.tracks,
            "faces_added": self.faces_added,
            "tracks_skipped": self.tracks_skipped,
            "already_indexed": self.already_indexed,
            "seconds": round(self.seconds, 3),
            "grouping": None if self.grouping is None else self.grouping.to_dict(),
        }


def track_key(video_key: str, track: int) -> str:
    """The photo key of a video's track: the sha256 of the video's sha256 and the track's number."""
    return hashlib.sha256(f"ghostfacenets video track:{video_key}:{track}".encode()).hexdigest()


def track_reference(video: str, time: float, track: int) -> str:
    """``clip.mp4@12.36s (track 7)``: the video, the time of the track's best sighting, the track."""
    return f"{video}@{time:.2f}s (track {track})"


@dataclass
class _Ended:
    """A finished track, reduced to what its face needs (the rest of the track, crops included, goes)."""

    id: int
    start: float
    end: float
    embedded: int
    best: BestFace
    crop: np.ndarray
    embedding: np.ndarray


def _file_source(video: VideoSource | str | Path, fps: float | None) -> tuple[VideoSource, str]:
    """The source of a whole video file, and the file's path."""
    if isinstance(video, VideoSource):
        source = video
    else:
        path = str(video)
        source = VideoSource(path if not path.isdigit() else f"./{path}", fps=fps)
    if not isinstance(source.source, str) or not Path(source.source).is_file():
        raise GhostFaceNetsError(f"{source.name}: only video files can be indexed (not streams or cameras)")
    if source.start or source.end is not None or source.loop:
        raise GhostFaceNetsError(f"{source.name}: a video is indexed whole (no start, end or loop)")
    return source, source.source


def index_video(
    video: VideoSource | str | Path,
    library: PeopleLibrary,
    watcher: VideoWatcher | None = None,
    *,
    fps: float | None = DEFAULT_FPS,
    store_crops: bool = False,
    place: bool = True,
    progress: bool = False,
    batch: int = 32,
) -> VideoIndexSummary:
    """Add every track of the video file ``video`` (a path sampled at ``fps`` frames a second, None: every frame;
    or a :class:`VideoSource` of a whole file) to ``library`` as one unlabelled face, ``batch`` tracks per
    transaction, then group the new faces unless ``place`` is False. ``watcher``: how faces are tracked (a
    :class:`VideoWatcher` with ``crops=True``; default: the library's recognizer with the default tracking).
    ``store_crops``: keep each face's aligned crop (PNG), as ``people add --store-crops`` does. A video held
    already is skipped before it is decoded; an interrupted run keeps the tracks stored so far and its re-run (with
    the same settings) adds the rest."""
    if batch < 1:
        raise GhostFaceNetsError(f"batch must be at least 1, got {batch}")
    source, path = _file_source(video, fps)
    if library.recognizer is None:
        raise GhostFaceNetsError("indexing a video needs a PeopleLibrary with a recognizer")
    if watcher is None:
        watcher = VideoWatcher(library.recognizer, crops=True)
    if not watcher.crops:
        raise GhostFaceNetsError("index_video needs a VideoWatcher that keeps crops (crops=True)")
    if watcher.recognizer.model_id != library.model:
        raise GhostFaceNetsError(
            f"the watcher's model ({watcher.recognizer.model_id.name}) is not the library's ({library.model.name})"
        )
    video_key = sha256_file(path)
    summary = VideoIndexSummary(source.name)
    if library.known([video_key]):
        summary.already_indexed = True
        return summary
    source.open()
    ended: list[_Ended] = []

    def keep(track: Track) -> None:
        embedding, best = track.embedding, track.best[0] if track.best else None
        if best is not None and best.crop is not None and embedding is not None:
            ended.append(_Ended(track.id, track.start, track.end, track.embedded, best, best.crop, embedding))

    def flush(extra: list[PhotoFaces]) -> None:
        known = library.known(track_key(video_key, t.id) for t in ended)
        new = [t for t in ended if track_key(video_key, t.id) not in known]
        summary.tracks_skipped += len(ended) - len(new)
        ended.clear()
        added = library.add(_track_photos(library, source.name, video_key, new, store_crops) + extra, place=False)
        summary.faces_added += added.faces

    for event in watcher.watch(source, progress=progress, ended=keep):
        if event.event == "left":
            summary.tracks += 1
        if len(ended) >= batch:
            flush([])
    flush([PhotoFaces(source.name, [], video_key)])  # the video, whole: a re-run skips it
    summary.seconds = watcher.times.video_seconds
    if place and summary.faces_added:
        summary.grouping = library.cluster()
    return summary


def _track_photos(
    library: PeopleLibrary, video: str, video_key: str, tracks: list[_Ended], store_crops: bool
) -> list[PhotoFaces]:
    """One photo of one face per finished track: the track's embedding, with the people quality, box, detection and
    (with ``store_crops``) crop of its best sighting."""
    if not tracks:
        return []
    crops = np.stack([t.crop for t in tracks])
    detected = [Face(np.asarray(t.best.box), t.best.score, np.asarray(t.best.landmarks)) for t in tracks]
    photos = []
    for track, face in zip(tracks, library.describe(crops, detected, store_crops=store_crops)):
        seen = {
            "time": round(track.best.time, 3),
            "frame": track.best.frame,
            "track": track.id,
            "start": round(track.start, 3),
            "end": round(track.end, 3),
            "sightings": track.embedded,
        }
        face = replace(face, embedding=track.embedding, detection={**(face.detection or {}), "video": seen})
        reference = track_reference(video, track.best.time, track.id)
        photos.append(PhotoFaces(reference, [face], track_key(video_key, track.id)))
    return photos
