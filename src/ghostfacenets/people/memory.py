"""Grouping in memory: the grouping rules and corrections without a database, for evaluation
(``evaluate --clustering``) and as the exact reference the gallery backends are tested against. Nearest neighbours
are exact (matrix products)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..gallery.base import NotFoundError
from ..gallery.people import BatchView, ExactNeighbours, FaceState, PersonState, Placement, read_view
from .grouping import GroupingSettings, GroupingSummary, place_pending


class MemoryPeople:
    """Faces (L2-normalised embeddings, one photo id and quality each) grouped with :func:`place_pending`."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._embeddings = np.zeros((0, dim), np.float32)
        self.states: dict[int, FaceState] = {}
        self.persons: dict[int, PersonState] = {}
        self.rejected: dict[int, set[int]] = {}
        self.names: dict[int, str] = {}
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

    def reset(self) -> None:
        """Forget every automatic placement (the full re-run's start): only pinned faces keep their person, and
        only people with a pinned face or a name are kept."""
        for state in self.states.values():
            if not state.pinned:
                state.person, state.placed = None, False
        self._refresh()

    @contextlib.contextmanager
    def correcting(self) -> Iterator[MemoryPeople]:
        """A :class:`~ghostfacenets.people.corrections.CorrectionSession` (people brought up to date after)."""
        yield self
        self._refresh()

    def _refresh(self) -> None:
        kept = {s.person for s in self.states.values() if s.pinned and s.person is not None} | set(self.names)
        placed = {s.person for s in self.states.values() if s.person is not None}
        self.persons = {p: PersonState(p, 0, np.zeros(self.dim, np.float64)) for p in kept | placed}
        for state in self.states.values():
            if state.person is not None:
                self.persons[state.person].count += 1
                self.persons[state.person].total += state.embedding
        for person in set(self.persons) - kept:
            if self.persons[person].count == 0:
                del self.persons[person]

    def labels(self) -> np.ndarray:
        """Each face's person id, -1 for unsorted or pending."""
        return np.array([s.person if s.person is not None else -1 for s in self.states.values()], np.int64)

    # ---------------------------------------------------------------------------------------------- PlacementBatch
    @contextlib.contextmanager
    def _batch(self) -> Iterator[MemoryPeople]:
        yield self

    def pending(self, limit: int) -> list[int]:
        return [i for i, s in self.states.items() if not s.placed and not s.pinned][:limit]

    def faces(self, ids: Collection[int], embeddings: bool = True) -> dict[int, FaceState]:
        return {i: self.states[i] for i in ids}

    def view(self, ids: Sequence[int], k: int, min_similarity: float) -> BatchView:
        return read_view(self, ids, k, min_similarity)

    def neighbours(self, ids: Sequence[int], k: int, min_similarity: float) -> dict[int, list[tuple[int, float]]]:
        pinned = np.array([s.pinned for s in self.states.values()], bool)
        exact = ExactNeighbours(np.arange(len(self._embeddings)), self._embeddings, pinned)
        return exact.neighbours(ids, k, min_similarity)

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

    # ---------------------------------------------------------------------------------------------- CorrectionSession
    def members(self, person: int) -> list[int]:
        if person not in self.persons:
            raise NotFoundError(f"no person {person}")
        return [i for i, s in self.states.items() if s.person == person]

    def people_of(self, faces: Collection[int]) -> dict[int, int | None]:
        unknown = set(faces) - self.states.keys()
        if unknown:
            raise NotFoundError(f"no face {min(unknown)}")
        return {i: self.states[i].person for i in faces}

    def assign(self, faces: Collection[int], person: int | None) -> None:
        for i in faces:
            self.states[i].person, self.states[i].pinned, self.states[i].placed = person, True, True

    def pin(self, faces: Collection[int]) -> None:
        for i in faces:
            self.states[i].pinned = self.states[i].placed = True

    def requeue(self, faces: Collection[int]) -> None:
        for i in faces:
            self.states[i].person, self.states[i].pinned, self.states[i].placed = None, False, False

    def start_person(self) -> int:
        person = self._next_person
        self._next_person += 1
        self.persons[person] = PersonState(person, 0, np.zeros(self.dim, np.float64))
        return person

    def remove_person(self, person: int) -> None:
        self.persons.pop(person, None)
        self.names.pop(person, None)

    def reject(self, face: int, person: int) -> None:
        self.rejected.setdefault(face, set()).add(person)

    def move_rejections(self, source: int, target: int) -> None:
        for people in self.rejected.values():
            if source in people:
                people.discard(source)
                people.add(target)

    def name_of(self, person: int) -> str | None:
        return self.names.get(person)

    def person_named(self, name: str) -> int | None:
        return next((p for p, n in self.names.items() if n == name), None)

    def set_name(self, person: int, name: str) -> None:
        self.names[person] = name

    def record(self, action: str, person: int | None, detail: Mapping[str, Any]) -> None:
        """The in-memory reference keeps no audit trail."""

    def absorb_name(self, target: int, source: int) -> None:
        name = self.names.pop(source)
        self.names.setdefault(target, name)
