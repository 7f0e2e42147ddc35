"""Grouping unlabelled faces into people, one face at a time, in face-id order.

Each face, when its turn comes, sees the faces that came before it (smaller ids) and the faces a user placed
(pinned), through its nearest neighbours among them (the store's nearest-neighbour search: pgvector's HNSW index on
PostgreSQL, an exact search on SQLite and in memory). Then:

1. A face below ``min_quality`` stays unsorted: it never joins or starts a group (smears, non-faces).
2. It **joins** the person it is most like, on average, among the people its neighbours belong to, when it is linked
   (cosine >= ``link``) to at least ``min(join_links, size)`` of that person's faces and its mean cosine to all of
   them is >= ``join`` (average linkage, through the person's sum of embeddings: one siblings' look-alike face links
   to a few faces but is not like the whole person). A person is never a candidate when it already holds a face of
   the same photo, or when a user said this face is not that person. When a second person comes within ``margin``
   of the best, the face is ambiguous and stays unsorted.
3. Otherwise it **starts a group** with its unsorted linked neighbours when at least ``min_faces`` faces from
   distinct photos hold together (each one's mean cosine to the others >= ``join``); else it stays unsorted until a
   later face gathers it into a group.
4. When a face joins or starts a person, its unsorted linked neighbours whose mean cosine to that person is >=
   ``join`` join it too: a face that came before its person had enough faces gets its second chance.

Groups are never merged automatically, and a face never moves once placed: wrong merges are what a photo-library user
pays for most, so the rules lean towards a split, which the user mends with one merge.

Because every decision depends only on the faces before it (and on the user's corrections), placing new faces in
batches as they arrive gives the same groups as placing the whole gallery at once (``full`` re-run), provided the
nearest-neighbour search is exact. The full re-run forgets every automatic placement and keeps what users did:
pinned faces (named, merged, split, confirmed), the people they belong to and every "not this person".
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import GhostFaceNetsError
from ..gallery.people import ExactNeighbours, FaceState, PersonState, Placement, PlacementBatch, read_view

SETTINGS_FAR = 1e-2  # link and join at the model's threshold for this FAR (docs/people.md)


class GroupingError(GhostFaceNetsError):
    """Grouping settings or corrections that cannot be applied."""


@dataclass(frozen=True)
class GroupingSettings:
    """How faces are grouped (see the module). The cosines depend on the model: :meth:`for_threshold` sets both at
    the model's threshold calibrated at FAR 1e-2 (what docs/people.md measured best; the defaults here are that rule
    for the official models' fallback threshold, not measured)."""

    link: float = 0.3  # two faces at least this similar are linked
    join: float = 0.3  # mean cosine to a person's faces needed to join it, or to hold a new group together
    join_links: int = 2  # links into a person needed to join it (fewer when the person has fewer faces)
    min_faces: int = 3  # faces from distinct photos needed to start a group
    min_quality: float = 0.3  # faces below never start or join a group
    margin: float = 0.0  # a second person this close to the best makes the face ambiguous (unsorted)
    neighbours: int = 32  # nearest neighbours looked at

    def __post_init__(self) -> None:
        for name in ("link", "join"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise GroupingError(f"{name} is a cosine in [-1, 1], got {getattr(self, name)}")
        if self.join_links < 1 or self.min_faces < 2 or self.neighbours < 1:
            raise GroupingError("join_links and neighbours must be at least 1, min_faces at least 2")
        if not 0.0 <= self.min_quality <= 1.0 or self.margin < 0:
            raise GroupingError("min_quality lies in [0, 1] and margin is not negative")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def for_threshold(cls, threshold: float, **changes: Any) -> GroupingSettings:
        """The defaults for a model whose verification threshold at FAR 1e-2 is ``threshold``: ``link`` and
        ``join`` both at it (a group needs several links and a mean, so each may be looser than a 1:1 decision)."""
        return cls(**{"link": threshold, "join": threshold, **changes})


@dataclass
class GroupingSummary:
    """What a grouping run did."""

    placed: int = 0
    joined: int = 0
    started_groups: int = 0
    gathered: int = 0  # unsorted faces that joined a group started by a later face
    rescued: int = 0  # unsorted faces that joined a person when a later neighbour did
    unsorted: int = 0
    low_quality: int = 0
    ambiguous: int = 0

    def add(self, other: GroupingSummary) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class _Batch:
    """The decisions of one batch, made one face at a time over the states read for it."""

    def __init__(
        self, store: PlacementBatch, settings: GroupingSettings, ids: list[int], exact: ExactNeighbours | None
    ) -> None:
        self.settings = settings
        self.ids = ids
        if exact is not None and all(i in exact for i in ids):
            view = read_view(store, ids, settings.neighbours, settings.link, exact)
        else:
            view = store.view(ids, settings.neighbours, settings.link)
        self.near, self.mates, self.states = view.near, view.mates, view.states
        self.persons, self.rejected = view.persons, view.rejected
        self.placement = Placement()
        self.summary = GroupingSummary()
        self._next_person = -1

    def run(self) -> None:
        for face_id in self.ids:
            face = self.states[face_id]
            if face.placed or face.pinned:
                continue
            self._decide(face)

    def _place(self, face: FaceState, person: int | None) -> None:
        face.person, face.placed = person, True
        self.placement.faces[face.id] = person
        if person is not None:
            state = self.persons[person]
            state.count += 1
            state.total = state.total + face.embedding
            self.placement.people[person] = state

    def _decide(self, face: FaceState) -> None:
        s = self.settings
        self.summary.placed += 1
        if face.quality < s.min_quality:
            self.summary.low_quality += 1
            self.summary.unsorted += 1
            self._place(face, None)
            return
        blocked = self._blocked(face)
        near = [(self.states[n], sim) for n, sim in self.near.get(face.id, ())]
        links: dict[int, int] = {}
        for other, _ in near:
            if other.person is not None and other.person not in blocked:
                links[other.person] = links.get(other.person, 0) + 1
        candidates = []
        for person, count in links.items():
            state = self.persons[person]
            mean = state.mean_similarity(face.embedding)
            if count >= min(s.join_links, state.count) and mean >= s.join:
                candidates.append((mean, count, -person, person))
        if candidates:
            candidates.sort(reverse=True)
            if len(candidates) > 1 and candidates[0][0] - candidates[1][0] < s.margin:
                self.summary.ambiguous += 1
                self.summary.unsorted += 1
                self._place(face, None)
                return
            self.summary.joined += 1
            self._place(face, candidates[0][3])
            self._rescue(face, candidates[0][3], near)
            return
        group = self._gather(face, near)
        if len(group) + 1 < s.min_faces:
            self.summary.unsorted += 1
            self._place(face, None)
            return
        person = self._next_person
        self._next_person -= 1
        self.persons[person] = PersonState(person, 0, np.zeros(face.embedding.shape, np.float64))
        self.summary.started_groups += 1
        self.summary.gathered += len(group)
        for member in [face, *group]:
            self._place(member, person)
        self._rescue(face, person, near)

    def _blocked(self, face: FaceState) -> set[int]:
        """The people ``face`` may not join: those it was rejected from and those holding a face of its photo."""
        blocked = set(self.rejected.get(face.id, ()))
        for mate in self.mates.get(face.id, ()):
            person = self.states[mate].person
            if person is not None:
                blocked.add(person)
        return blocked

    def _rescue(self, face: FaceState, person: int, near: list[tuple[FaceState, float]]) -> None:
        """Unsorted faces linked to ``face`` that are, on average, like ``person`` join it too: a face that came
        before its person had enough faces gets its second chance when a neighbour joins."""
        s = self.settings
        state = self.persons[person]
        for other, _ in near:
            if (
                other.placed
                and other.person is None
                and not other.pinned
                and other.quality >= s.min_quality
                and person not in self._blocked(other)
                and state.mean_similarity(other.embedding) >= s.join
            ):
                self.summary.rescued += 1
                self._place(other, person)

    def _gather(self, face: FaceState, near: list[tuple[FaceState, float]]) -> list[FaceState]:
        """The unsorted linked neighbours that hold together with ``face`` as a new group, most similar first; one
        face per photo."""
        s = self.settings
        chosen: list[FaceState] = []
        photos = {face.photo}
        total = face.embedding.astype(np.float64)
        for other, _ in near:
            if (
                not other.placed
                or other.pinned
                or other.person is not None
                or other.quality < s.min_quality
                or other.photo in photos
            ):
                continue
            # the candidate's mean cosine to the faces chosen so far, and theirs to it
            if float(other.embedding @ total) / (len(chosen) + 1) < s.join:
                continue
            if any(float(member.embedding @ other.embedding) < min(s.join, s.link) for member in chosen):
                continue
            chosen.append(other)
            photos.add(other.photo)
            total = total + other.embedding
        return chosen


def place_pending(
    open_batch: Callable[[], AbstractContextManager[PlacementBatch]],
    settings: GroupingSettings,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
    exact: ExactNeighbours | None = None,
) -> GroupingSummary:
    """Place every pending face, ``batch_size`` at a time (each batch one transaction of the store that
    ``open_batch`` opens), smallest id first; ``progress(faces placed)`` after each batch. ``exact``: the faces'
    embeddings read once for the whole run (what a full re-run wants), instead of the store's nearest-neighbour
    search for every batch; faces added since are searched by the store."""
    if batch_size < 1:
        raise GroupingError(f"batch_size must be at least 1, got {batch_size}")
    summary = GroupingSummary()
    while True:
        with open_batch() as store:
            ids = store.pending(batch_size)
            if not ids:
                return summary
            batch = _Batch(store, settings, ids, exact)
            batch.run()
            store.apply(batch.placement)
        summary.add(batch.summary)
        if progress is not None:
            progress(batch.summary.placed)
        if len(ids) < batch_size:  # the last batch (faces added meanwhile wait for the next run)
            return summary


def partition(assignments: dict[int, int | None]) -> set[frozenset[int]]:
    """The groups of an assignment (face -> person) as sets of face ids, without the unsorted faces: what two
    runs must agree on whatever ids their people got."""
    groups: dict[int, set[int]] = {}
    for face, person in assignments.items():
        if person is not None:
            groups.setdefault(person, set()).add(face)
    return {frozenset(g) for g in groups.values()}
