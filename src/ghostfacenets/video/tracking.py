"""Faces followed across frames: tracks, and their association with each frame's detections.

The association is ByteTrack's (Zhang et al. 2022) with appearance added as in BoT-SORT: confident detections are
matched first against every track (followed, new and lost) on a score that adds the overlap of the track's predicted
box (constant velocity, widened while it is lost) to the cosine similarity of the embeddings, by an optimal
assignment (Hungarian); weaker detections then continue the tracks still unmatched on overlap alone. A confident
detection left over starts a track, which counts once it is matched ``min_hits`` times; a track unseen for
``max_lost`` seconds has left.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import GhostFaceNetsError
from .source import require


@dataclass(frozen=True)
class TrackerSettings:
    """How faces are followed.

    ``det_threshold``: detector score from which a face may start a track; ``low_threshold``: the score from which
    a weaker detection may still continue one (ByteTrack's second stage: blurred, turned or partly covered faces).
    ``min_hits``: detections before a track counts (fewer is a false detection, never reported). ``max_lost``:
    seconds a track survives unseen (someone turning away, walking behind someone) before it has left.
    ``min_overlap``: least overlap (IoU) of a detection with a track's predicted box for a match.
    ``appearance_weight``: share of embedding similarity, against box overlap, in the matching score; a pair whose
    similarity is below ``same_person`` (default: the recognizer's threshold) never matches: someone who steps into
    the place of a person who just left starts a track of their own. ``best_faces``: the best-quality sightings
    whose embeddings make the track's identity; ``min_faces``: sightings embedded before the first identity
    decision. ``refresh``: a face that only one track can claim, and that would not be among its best, is embedded
    at most this often (seconds) to keep the track's appearance current (:meth:`FaceTracker.wanted`).
    """

    det_threshold: float = 0.9
    low_threshold: float = 0.6
    min_hits: int = 2
    max_lost: float = 1.5
    min_overlap: float = 0.1
    appearance_weight: float = 0.5
    same_person: float | None = None
    best_faces: int = 5
    min_faces: int = 3
    refresh: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_threshold <= self.det_threshold <= 1.0:
            raise GhostFaceNetsError(
                f"detection thresholds must satisfy 0 <= low <= high <= 1, got {self.low_threshold} and "
                f"{self.det_threshold}"
            )
        if self.min_hits < 1 or self.best_faces < 1 or self.min_faces < 1:
            raise GhostFaceNetsError("min_hits, best_faces and min_faces must be at least 1")
        if self.max_lost < 0:
            raise GhostFaceNetsError(f"max_lost must not be negative, got {self.max_lost}")
        if not 0.0 <= self.appearance_weight <= 1.0 or not 0.0 <= self.min_overlap < 1.0:
            raise GhostFaceNetsError("appearance_weight lies in [0, 1] and min_overlap in [0, 1)")


@dataclass
class Sighting:
    """A face seen in one frame: where, how well (``quality``), and its embedding when one was computed."""

    time: float
    frame: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    quality: float = 0.0
    embedding: np.ndarray | None = None
    crop: np.ndarray | None = None  # the aligned 112x112 crop, kept only when asked (VideoWatcher's ``crops``)


@dataclass
class BestFace:
    """One of a track's best sightings: its quality, time, frame, box, detector score, landmarks, embedding and,
    when the watcher keeps them, its aligned crop."""

    quality: float
    time: float
    frame: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray
    crop: np.ndarray | None = None


@dataclass
class Track:
    """One face followed across frames, from ``start`` to ``end`` (seconds, the last frame it was seen in)."""

    id: int
    start: float
    start_frame: int
    end: float
    end_frame: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    hits: int = 1  # detections matched
    seen: int = 1  # frames seen in (detected or followed)
    confirmed: bool = False
    lost: bool = False
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # of the box's centre, pixels a second
    best: list[BestFace] = field(default_factory=list)  # best first
    embedded: int = 0  # sightings embedded
    appearance: np.ndarray | None = None  # running mean of recent embeddings, for matching
    embedded_at: float = -math.inf  # time of its latest embedded sighting
    patch: np.ndarray | None = None  # grey patch at the last detection (see motion.follow)
    changed: bool = False  # its best faces changed since the last identity decision
    detected_box: np.ndarray | None = None  # its latest detection (followed boxes do not move predictions)
    detected_at: float = 0.0

    @property
    def quality(self) -> float:
        """The best quality of its sightings (0 before any was embedded)."""
        return self.best[0].quality if self.best else 0.0

    @property
    def embedding(self) -> np.ndarray | None:
        """The identity embedding: the L2-normalised mean of its best sightings' embeddings."""
        if not self.best:
            return None
        mean = np.mean([b.embedding for b in self.best], axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def predict(self, time: float) -> np.ndarray:
        """The box expected at ``time``: its latest detection moved at the smoothed velocity of its centre."""
        box = self.detected_box if self.detected_box is not None else self.box
        return box + np.tile(self.velocity, 2) * (time - self.detected_at)

    def observe(self, time: float, frame: int, box: np.ndarray, landmarks: np.ndarray) -> None:
        """Seen at ``time`` (detected or followed): the box moves there."""
        self.box = np.asarray(box, np.float64)
        self.landmarks = np.asarray(landmarks, np.float64)
        self.end, self.end_frame = time, frame
        self.seen += 1
        self.lost = False

    def add_sighting(self, sighting: Sighting, best_faces: int) -> None:
        """A detection matched to the track: the velocity follows it (smoothed), its embedding joins the
        appearance, and the best faces if it is one of the ``best_faces`` best so far."""
        box = np.asarray(sighting.box, np.float64)
        dt = sighting.time - self.detected_at
        if self.detected_box is not None and dt > 1e-6:
            measured = ((box[:2] + box[2:]) - (self.detected_box[:2] + self.detected_box[2:])) / 2 / dt
            self.velocity = measured if self.hits == 1 else 0.6 * self.velocity + 0.4 * measured
        self.detected_box, self.detected_at = box, sighting.time
        self.observe(sighting.time, sighting.frame, sighting.box, sighting.landmarks)
        self.score = sighting.score
        self.hits += 1
        self._remember(sighting, best_faces)

    def _remember(self, sighting: Sighting, best_faces: int) -> None:
        if sighting.embedding is None:
            return
        self.embedded += 1
        self.embedded_at = sighting.time
        e = sighting.embedding.astype(np.float64)
        if self.appearance is None:
            self.appearance = e
        elif sighting.quality >= 0.5 * self.quality:  # a covered or blurred view would blur the appearance
            mixed = 0.7 * self.appearance + 0.3 * e
            self.appearance = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
        if len(self.best) < best_faces or sighting.quality > self.best[-1].quality:
            self.best.append(
                BestFace(
                    sighting.quality,
                    sighting.time,
                    sighting.frame,
                    np.asarray(sighting.box),
                    sighting.score,
                    np.asarray(sighting.landmarks),
                    sighting.embedding,
                    sighting.crop,
                )
            )
            self.best.sort(key=lambda b: -b.quality)
            del self.best[best_faces:]
            self.changed = True


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), boxes as x1, y1, x2, y2."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def best_pairs(scores: np.ndarray) -> list[tuple[int, int]]:
    """The (row, column) pairs of the highest total score, each row and column in at most one, never a pair
    scored -inf or below 0: every row may also stay unpaired (for 0), so no pair is forced on a row to make room
    for another (the Hungarian algorithm on the matrix widened by one "unpaired" column per row)."""
    rows, cols = scores.shape
    if rows == 0 or cols == 0 or not np.isfinite(scores).any():
        return []
    forbidden = -1e9
    widened = np.full((rows, cols + rows), forbidden)
    widened[:, :cols] = np.where(np.isfinite(scores) & (scores >= 0), scores, forbidden)
    widened[np.arange(rows), cols + np.arange(rows)] = 0.0
    chosen_rows, chosen_cols = require("scipy.optimize").linear_sum_assignment(widened, maximize=True)
    return [(int(r), int(c)) for r, c in zip(chosen_rows, chosen_cols) if c < cols and widened[r, c] > forbidden]


def _widened(box: np.ndarray, factor: float) -> np.ndarray:
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * factor
    return np.concatenate([centre - half, centre + half])


@dataclass
class Changes:
    """What one update did: tracks ``started`` (new, not yet counting), that now count (``appeared``), that
    ``left``, and those seen in the frame."""

    started: list[Track] = field(default_factory=list)
    appeared: list[Track] = field(default_factory=list)
    left: list[Track] = field(default_factory=list)
    seen: list[Track] = field(default_factory=list)


class FaceTracker:
    """The tracks of one video. Call :meth:`update` with each detection frame's sightings, :meth:`move` with the
    boxes followed in the frames between, and :meth:`finish` at the end."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.tracks: list[Track] = []  # alive: new, followed or lost
        self._ids = itertools.count(1)

    def _predicted(self, tracks: list[Track], time: float) -> np.ndarray:
        """Each track's predicted box at ``time``, wider the longer it is unseen."""
        return np.stack([_widened(t.predict(time), 1.0 + max(0.0, time - t.end)) for t in tracks])

    def wanted(self, time: float, sightings: list[Sighting]) -> list[bool]:
        """Which sightings need an embedding: a face that no track or several tracks could claim, one near a lost
        track or near another face, and a face that would join its track's best faces or whose track has not been
        embedded for ``refresh`` seconds. The rest (one face plainly continuing one track) is matched on motion
        alone, which saves most of the embedding work of a steady scene."""
        if not self.tracks or not sightings:
            return [True] * len(sightings)
        s = self.settings
        near = box_iou(self._predicted(self.tracks, time), np.stack([x.box for x in sightings])) >= s.min_overlap
        wanted = []
        for j, sighting in enumerate(sightings):
            rows = np.flatnonzero(near[:, j])
            if not len(rows) and sighting.score < s.det_threshold:
                wanted.append(False)  # too weak to start a track, and no track to continue
                continue
            if len(rows) != 1 or near[rows[0]].sum() != 1 or self.tracks[rows[0]].lost:
                wanted.append(True)
                continue
            track = self.tracks[rows[0]]
            improves = len(track.best) < s.best_faces or sighting.quality > track.best[-1].quality
            wanted.append(improves or time - track.embedded_at >= s.refresh)
        return wanted

    def _score(self, tracks: list[Track], sightings: list[Sighting], time: float, appearance: bool) -> np.ndarray:
        """Matching scores (tracks x sightings), -inf where a pair may not match."""
        s = self.settings
        scores = np.full((len(tracks), len(sightings)), -np.inf)
        if not tracks or not sightings:
            return scores
        overlaps = box_iou(self._predicted(tracks, time), np.stack([x.box for x in sightings]))
        for i, track in enumerate(tracks):
            overlap = overlaps[i]
            for j, sighting in enumerate(sightings):
                if overlap[j] < s.min_overlap:
                    continue
                if appearance and track.appearance is not None and sighting.embedding is not None:
                    similarity = float(track.appearance @ sighting.embedding)
                    if s.same_person is not None and similarity < s.same_person:
                        continue
                    scores[i, j] = (1 - s.appearance_weight) * overlap[j] + s.appearance_weight * similarity
                else:
                    scores[i, j] = overlap[j]
        return scores

    def update(self, time: float, frame: int, sightings: list[Sighting]) -> Changes:
        """Associate a detection frame's sightings with the tracks."""
        s = self.settings
        changes = Changes()
        high = [x for x in sightings if x.score >= s.det_threshold]
        low = [x for x in sightings if s.low_threshold <= x.score < s.det_threshold]
        matched: set[int] = set()
        pairs = best_pairs(self._score(self.tracks, high, time, appearance=True))
        for i, j in pairs:
            self._matched(self.tracks[i], high[j], changes)
            matched.add(i)
        rest = [i for i, t in enumerate(self.tracks) if i not in matched and not t.lost]
        for i, j in best_pairs(self._score([self.tracks[i] for i in rest], low, time, appearance=False)):
            self._matched(self.tracks[rest[i]], low[j], changes)
            matched.add(rest[i])
        survivors = []
        for i, track in enumerate(self.tracks):
            if i in matched:
                survivors.append(track)
            elif not track.confirmed:
                continue  # a new track missed at once: a false detection
            elif time - track.end > s.max_lost:
                changes.left.append(track)
            else:
                track.lost = True
                survivors.append(track)
        taken = {j for _, j in pairs}
        for j, sighting in enumerate(high):
            if j not in taken:
                track = self._start(sighting)
                survivors.append(track)
                changes.started.append(track)
                if track.confirmed:
                    changes.appeared.append(track)
                    changes.seen.append(track)
        self.tracks = survivors
        return changes

    def _start(self, sighting: Sighting) -> Track:
        track = Track(
            next(self._ids),
            sighting.time,
            sighting.frame,
            sighting.time,
            sighting.frame,
            np.asarray(sighting.box, np.float64),
            np.asarray(sighting.landmarks, np.float64),
            sighting.score,
            confirmed=self.settings.min_hits <= 1,
            detected_box=np.asarray(sighting.box, np.float64),
            detected_at=sighting.time,
        )
        track._remember(sighting, self.settings.best_faces)
        return track

    def _matched(self, track: Track, sighting: Sighting, changes: Changes) -> None:
        track.add_sighting(sighting, self.settings.best_faces)
        changes.seen.append(track)
        if not track.confirmed and track.hits >= self.settings.min_hits:
            track.confirmed = True
            changes.appeared.append(track)

    def move(self, time: float, frame: int, moved: dict[int, tuple[np.ndarray, np.ndarray]]) -> Changes:
        """Boxes and landmarks followed between detections, by track id (a track not in ``moved`` was not seen in
        this frame); tracks unseen for longer than ``max_lost`` leave."""
        changes = Changes()
        for track in self.tracks:
            found = moved.get(track.id)
            if found is not None and not track.lost:
                track.observe(time, frame, *found)
                if track.confirmed:
                    changes.seen.append(track)
        changes.left = self.expire(time)
        return changes

    def expire(self, time: float) -> list[Track]:
        """Tracks unseen for longer than ``max_lost`` at ``time``, removed (new ones that were never confirmed go
        without a word)."""
        keep, left = [], []
        for track in self.tracks:
            if time - track.end > self.settings.max_lost:
                if track.confirmed:
                    left.append(track)
            else:
                keep.append(track)
        self.tracks = keep
        return left

    def finish(self) -> list[Track]:
        """Every confirmed track, at the end of the video."""
        left = [t for t in self.tracks if t.confirmed]
        self.tracks = []
        return left

    @property
    def visible(self) -> list[Track]:
        """Confirmed tracks not lost."""
        return [t for t in self.tracks if t.confirmed and not t.lost]
