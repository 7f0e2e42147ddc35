"""One identity per track, from the mean embedding of its best sightings, never the same for two tracks in one
frame.

The gallery is searched with each track's identity embedding (its ``k`` closest subjects kept); the tracks in a
frame then get their subjects by an optimal assignment (Hungarian, highest total similarity) in which a subject
goes to at most one track and only above the threshold (:func:`~ghostfacenets.video.tracking.best_pairs`). A track
left without a subject is an unknown person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..gallery import Candidate, GalleryStore, ModelId
from .tracking import Track, best_pairs


@dataclass(frozen=True)
class Identity:
    """A track's decision: ``name`` and ``subject_id`` (None: an unknown person), the ``similarity`` of the chosen
    subject (or of the closest one, for an unknown person), the threshold and the closest ``candidates``."""

    name: str | None
    subject_id: int | None
    similarity: float | None
    threshold: float
    candidates: tuple[Candidate, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "identity": self.name,
            "subject_id": self.subject_id,
            "similarity": None if self.similarity is None else round(self.similarity, 6),
        }


def assign(candidates: list[list[Candidate]], threshold: float) -> list[Candidate | None]:
    """Per track (in order), its subject among its ``candidates``: the assignment of highest total similarity in
    which no subject goes to two tracks and every pair passes ``threshold`` (and 0: a track is never given a
    subject it is less like than an unknown person)."""
    subjects = sorted({c.subject_id for found in candidates for c in found if c.similarity > threshold})
    column = {s: j for j, s in enumerate(subjects)}
    scores = np.full((len(candidates), len(subjects)), -np.inf)
    best: dict[tuple[int, int], Candidate] = {}
    for i, found in enumerate(candidates):
        for c in found:
            j = column.get(c.subject_id)
            if j is not None and c.similarity > threshold and c.similarity > scores[i, j]:
                scores[i, j] = c.similarity
                best[i, j] = c
    chosen: list[Candidate | None] = [None] * len(candidates)
    for i, j in best_pairs(scores):
        chosen[i] = best[i, j]
    return chosen


class IdentityJudge:
    """Decides the identities of tracks against one gallery. ``k``: subjects kept per track, at least the tracks
    in a frame plus one, so that the assignment always has a free choice."""

    def __init__(self, store: GalleryStore, gallery: str, model: ModelId, threshold: float, k: int = 5) -> None:
        self.store = store
        self.gallery = gallery
        self.model = model
        self.threshold = threshold
        self.k = k
        self._candidates: dict[int, list[Candidate]] = {}

    def decide(self, tracks: list[Track]) -> dict[int, Identity]:
        """Identities of ``tracks`` (those seen in one frame) that have an embedding; the gallery is searched again
        only for tracks whose best faces changed since."""
        ready = [t for t in tracks if t.best]
        stale = [t for t in ready if t.changed or t.id not in self._candidates]
        if stale:
            k = max(self.k, len(ready) + 1)
            queries = np.stack([t.embedding for t in stale if t.embedding is not None])
            found = self.store.search(self.gallery, queries, self.model, k)
            for track, candidates in zip(stale, found):
                self._candidates[track.id] = candidates
                track.changed = False
        chosen = assign([self._candidates[t.id] for t in ready], self.threshold)
        result = {}
        for track, pick in zip(ready, chosen):
            kept = tuple(self._candidates[track.id])
            if pick is not None:
                result[track.id] = Identity(pick.name, pick.subject_id, pick.similarity, self.threshold, kept)
            else:
                closest = kept[0].similarity if kept else None
                result[track.id] = Identity(None, None, closest, self.threshold, kept)
        return result

    def forget(self, track: Track) -> None:
        """Drop what is kept for a track that ended (memory stays flat over any number of tracks)."""
        self._candidates.pop(track.id, None)
