"""Grouping in memory: the store-free home of the grouping rules, for evaluation (``evaluate --clustering``) and as
the exact reference the gallery backends are tested against. Nearest neighbours are exact (matrix products)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Sequence

import numpy as np

from .grouping import FaceState, GroupingSettings, GroupingSummary, PersonState, Placement, place_pending

BLOCK = 1024  # queries per matrix product


class MemoryPeople:
    """Faces (L2-normalised embeddings, one photo id and quality each) grouped with :func:`place_pending`."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._embeddings = np.zeros((0, dim), np.float32)
        self.states: dict[int, FaceState] = {}
        self.persons: dict[int, PersonState] = {}
        self.rejected: dict[int, set[int]] = {}
        self._by_photo: dict[int, list[int]] = {}
        self._next_person = 1

    # ---------------------------------------------------------------------------------------------- the caller's
    def add(self, embeddings: np.ndarray, photos: Sequence[int], qualities: Sequence[float]) -> list[int]:
        """Add faces (pending); returns their ids (consecutive, from 0)."""
        vectors = np.asarray(embeddings, np.float32).reshape(-1, self.dim)
        start = len(self._embeddings)
        self._embeddings = np.concatenate([self._embeddings, vectors])
        ids = list(range(start, start + len(vectors)))
        for face_id, photo, quality in zip(ids, photos, qualities, strict=True):
            self.states[face_id] = FaceState(face_id, int(photo), float(quality), self._embeddings[face_id])
            self._by_photo.setdefault(int(photo), []).append(face_id)
        return ids

    def place(self, settings: GroupingSettings, batch_size: int = 256) -> GroupingSummary:
        """Place the pending faces."""
        return place_pending(self._batch, settings, batch_size)

    def labels(self) -> np.ndarray:
        """Each face's person id, -1 for unsorted or pending."""
        return np.array([s.person if s.person is not None else -1 for s in self.states.values()], np.int64)

    # ---------------------------------------------------------------------------------------------- PlacementBatch
    @contextlib.contextmanager
    def _batch(self) -> Iterator[MemoryPeople]:
        yield self

    def pending(self, limit: int) -> list[int]:
        return [i for i, s in self.states.items() if not s.placed and not s.pinned][:limit]

    def faces(self, ids: Collection[int]) -> dict[int, FaceState]:
        return {i: self.states[i] for i in ids}

    def neighbours(self, ids: Sequence[int], k: int, min_similarity: float) -> dict[int, list[tuple[int, float]]]:
        found: dict[int, list[tuple[int, float]]] = {}
        pinned = np.array([s.pinned for s in self.states.values()], bool)
        positions = np.arange(len(self._embeddings))
        for start in range(0, len(ids), BLOCK):
            block = np.asarray(ids[start : start + BLOCK])
            scores = self._embeddings[block] @ self._embeddings.T
            visible = (positions[None, :] < block[:, None]) | pinned[None, :]
            visible[np.arange(len(block)), block] = False
            scores = np.where(visible & (scores >= min_similarity), scores, -np.inf)
            for face_id, row in zip(block.tolist(), scores):
                top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
                top = top[np.isfinite(row[top])]
                top = top[np.lexsort((top, -row[top]))]
                found[face_id] = [(int(j), float(row[j])) for j in top]
        return found

    def photo_mates(self, ids: Collection[int]) -> dict[int, list[int]]:
        return {i: [m for m in self._by_photo[self.states[i].photo] if m != i] for i in ids}

    def people(self, ids: Collection[int]) -> dict[int, PersonState]:
        return {i: PersonState(i, self.persons[i].count, self.persons[i].total.copy()) for i in ids}

    def rejections(self, ids: Collection[int]) -> dict[int, set[int]]:
        return {i: set(self.rejected[i]) for i in ids if i in self.rejected}

    def apply(self, placement: Placement) -> dict[int, int]:
        given = {}
        for temporary in placement.started:
            given[temporary] = self._next_person
            self._next_person += 1
        for person, change in placement.people.items():
            real = given.get(person, person)
            self.persons[real] = PersonState(real, change.count, change.total.copy())
        for face_id, chosen in placement.faces.items():
            face = self.states[face_id]
            face.person = given.get(chosen, chosen) if chosen is not None else None
            face.placed = True
        return given
