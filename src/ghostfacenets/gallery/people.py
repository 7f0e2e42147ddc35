"""What the gallery stores keep for grouping unlabelled faces into people (:mod:`ghostfacenets.people` holds the
rules; the stores hold the rows and their nearest-neighbour search).

Rows: a **photo** (``photos``: the caller's reference and the key that re-runs skip) has faces; an unlabelled face is
a row of ``faces`` like an enrolled one, with its photo, quality, ``placed`` (grouping has decided about it) and
``pinned`` (a user placed it), and its **person** (``people``) once grouped. A person becomes a subject when named:
its faces then carry the subject's id, so ``identify`` finds them; unnamed people and unsorted faces are invisible
to ``identify``. ``people_rejections`` records "not this person". Faces of one photo share its key in
``image_sha256`` (an enrolled image's sha256 is unique in its gallery; a photo's faces are not).

Grouping and corrections run in transactions that hold the gallery's write lock, one batch at a time
(:class:`PlacementBatch`, :class:`CorrectionSession`), so that what they read stays true until they write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from .base import GalleryError, ModelId, check_embedding

MAX_REFERENCE = 1000  # characters of a photo reference
MAX_PHOTOS = 10_000  # photos in one add_photos call
MAX_SETTINGS_BYTES = 4096


# ------------------------------------------------------------------------------------------------ adding faces
@dataclass(frozen=True)
class UnlabelledFace:
    """One face to add without a name: its L2-normalised ``embedding`` (of the gallery's model), ``quality`` in
    [0, 1] (faces below the gallery's ``min_quality`` are kept but never grouped), ``box`` (x1, y1, x2, y2 in the
    photo's or frame's pixels), the detector's record (``score``, ``landmarks``, quality parts, anything JSON) and
    the aligned 112x112 ``crop`` as PNG bytes, only when the caller opted in to keeping crops."""

    embedding: np.ndarray
    quality: float
    box: Sequence[float] | None = None
    detection: Mapping[str, Any] | None = None
    crop: bytes | None = None

    def record(self) -> dict[str, Any]:
        """What is stored as the face's detection record: the detector's, with the box."""
        record = dict(self.detection or {})
        if self.box is not None:
            record["box"] = [round(float(v), 2) for v in self.box]
        return record


@dataclass(frozen=True)
class PhotoFaces:
    """A photo or a video moment and every face found in it (none is fine: the photo is recorded as done).

    ``reference`` is what the caller knows it by (a path, an id, ``"clip.mp4@12.3s"``): stored and shown, never
    opened. ``key`` identifies it (default: the sha256 of the reference): a photo whose key the gallery holds is
    skipped, and faces of one key are never grouped as one person unless a user says so. Give the sha256 of the
    photo's bytes where there is a photo: a renamed or moved photo is then still known."""

    reference: str
    faces: Sequence[UnlabelledFace] = field(default_factory=tuple)
    key: str | None = None

    @property
    def photo_key(self) -> str:
        return self.key if self.key is not None else hashlib.sha256(self.reference.encode()).hexdigest()


@dataclass
class AddedPhotos:
    """What adding photos did: photos added (reference -> their new face ids, in order), photos skipped because
    the gallery had their key already (references), and the grouping of the new faces when asked (a
    :class:`ghostfacenets.people.GroupingSummary`)."""

    added: dict[str, list[int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    grouping: Any = None

    @property
    def faces(self) -> int:
        return sum(len(ids) for ids in self.added.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "photos_added": len(self.added),
            "faces_added": self.faces,
            "photos_skipped": len(self.skipped),
            "face_ids": self.added,
            "grouping": None if self.grouping is None else self.grouping.to_dict(),
        }


def check_photos(photos: Sequence[PhotoFaces], model: ModelId) -> None:
    """Refuse what a store could not keep: a reference empty or too long, a key that is not a sha256, a key twice,
    a quality outside [0, 1], a box that is not four finite numbers, an embedding of another size or not unit."""
    if len(photos) > MAX_PHOTOS:
        raise GalleryError(f"at most {MAX_PHOTOS:,} photos at a time, got {len(photos):,}")
    seen: set[str] = set()
    for photo in photos:
        reference = photo.reference
        if not isinstance(reference, str) or not reference.strip() or len(reference) > MAX_REFERENCE:
            raise GalleryError(f"a photo reference must be 1-{MAX_REFERENCE} characters, got {reference!r}")
        if any(ord(c) < 32 for c in reference):
            raise GalleryError(f"photo reference {reference!r} holds control characters")
        key = photo.photo_key
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise GalleryError(f"{reference}: the photo key must be a sha256 in 64 lowercase hex digits")
        if key in seen:
            raise GalleryError(f"{reference}: the same photo key twice in one call")
        seen.add(key)
        for face in photo.faces:
            if not 0.0 <= float(face.quality) <= 1.0:
                raise GalleryError(f"{reference}: face quality must lie in [0, 1], got {face.quality}")
            if face.box is not None:
                box = np.asarray(face.box, np.float64)
                if box.shape != (4,) or not np.all(np.isfinite(box)):
                    raise GalleryError(f"{reference}: a box is four finite numbers x1, y1, x2, y2")
            if face.crop is not None and not isinstance(face.crop, bytes):
                raise GalleryError(f"{reference}: a crop is PNG bytes")
            check_embedding(face.embedding, model, reference)


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Person:
    """A person of a gallery: ``name`` (its subject's) once named, how many faces it holds and how many a user
    placed, and a face to show for it (the best quality one with a crop, else the best quality one)."""

    id: int
    name: str | None
    subject_id: int | None
    faces: int
    pinned: int
    cover_face: int | None
    created: str
    updated: str

    def to_dict(self) -> dict[str, Any]:
        """The person as the CLI's JSON and the service's answers give it."""
        return asdict(self)


@dataclass(frozen=True)
class PersonFace:
    """An unlabelled face (no embedding)."""

    id: int
    person_id: int | None
    reference: str
    photo_key: str
    detection: dict[str, Any] | None
    quality: float
    placed: bool
    pinned: bool
    has_crop: bool
    created: str

    @property
    def box(self) -> list[float] | None:
        return (self.detection or {}).get("box")

    def to_dict(self) -> dict[str, Any]:
        """The face as the service's answers give it (no embedding, no photo key)."""
        return {
            "id": self.id,
            "person_id": self.person_id,
            "reference": self.reference,
            "box": self.box,
            "quality": round(self.quality, 4),
            "det_score": (self.detection or {}).get("score"),
            "pinned": self.pinned,
            "placed": self.placed,
            "has_crop": self.has_crop,
            "created": self.created,
        }


@dataclass(frozen=True)
class PeopleSummary:
    """How a gallery's unlabelled faces stand."""

    photos: int
    faces: int
    pending: int
    unsorted: int
    low_quality: int  # unsorted faces below the gallery's min_quality
    people: int
    named: int


# ------------------------------------------------------------------------------------------------ grouping
@dataclass
class FaceState:
    """A face as grouping sees it. ``person``: None while unsorted; ``pinned``: placed by a user (never moved by
    grouping); ``placed``: grouping has decided about it (pending otherwise)."""

    id: int
    photo: int
    quality: float
    embedding: np.ndarray  # L2-normalised float32
    person: int | None = None
    pinned: bool = False
    placed: bool = False


@dataclass
class PersonState:
    """A person as grouping sees it: how many faces it holds and their sum (for the mean cosine)."""

    id: int
    count: int
    total: np.ndarray  # float64 sum of the faces' embeddings

    def mean_similarity(self, embedding: np.ndarray) -> float:
        return float(embedding.astype(np.float64) @ self.total / self.count) if self.count else -1.0


@dataclass
class Placement:
    """What one batch decided: each face placed (its person, None for unsorted) and the people changed or
    started (started ones have negative ids until the store gives them real ones)."""

    faces: dict[int, int | None] = field(default_factory=dict)
    people: dict[int, PersonState] = field(default_factory=dict)

    @property
    def started(self) -> list[int]:
        return sorted((p for p in self.people if p < 0), reverse=True)


@dataclass
class BatchView:
    """What one grouping batch decides on: the batch's faces' nearest neighbours (``near``), the other faces of
    their photos and of their neighbours' photos (``mates``), the states of all those faces (embeddings of the
    batch's faces and their neighbours; a mate's may be left empty), the people they belong to (``persons``) and the
    people each face was rejected from. It may hold more than that (never less)."""

    near: dict[int, list[tuple[int, float]]]
    mates: dict[int, list[int]]
    states: dict[int, FaceState]
    persons: dict[int, PersonState]
    rejected: dict[int, set[int]]


class PlacementBatch(Protocol):
    """What grouping needs from a store for one batch, in one transaction holding the gallery's write lock."""

    def pending(self, limit: int) -> list[int]:
        """Up to ``limit`` ids of faces waiting to be placed, smallest first."""
        ...

    def view(self, ids: Sequence[int], k: int, min_similarity: float) -> BatchView:
        """What the batch of faces ``ids`` decides on (:func:`read_view`'s answer, in as few round trips as the
        store can)."""
        ...

    def faces(self, ids: Collection[int], embeddings: bool = True) -> dict[int, FaceState]:
        """The faces' states (their embeddings left empty unless ``embeddings``)."""
        ...

    def neighbours(self, ids: Sequence[int], k: int, min_similarity: float) -> dict[int, list[tuple[int, float]]]:
        """For each face: up to ``k`` (face id, cosine) of its nearest faces with cosine >= ``min_similarity``,
        best first, among the faces **visible** to it: smaller ids, or pinned."""
        ...

    def photo_mates(self, ids: Collection[int]) -> dict[int, list[int]]:
        """For each face: the other faces of its photo."""
        ...

    def people(self, ids: Collection[int]) -> dict[int, PersonState]: ...

    def rejections(self, ids: Collection[int]) -> dict[int, set[int]]:
        """For each face: the people a user said it is not."""
        ...

    def apply(self, placement: Placement) -> dict[int, int]:
        """Write the batch's decisions; returns the ids given to the people it started (negative id -> id)."""
        ...


def read_view(
    batch: PlacementBatch, ids: Sequence[int], k: int, min_similarity: float, exact: ExactNeighbours | None = None
) -> BatchView:
    """What the batch of faces ``ids`` decides on, read through ``batch``'s methods one after another (neighbours
    from ``exact`` instead when given: it holds every face of ``ids`` and the embeddings)."""
    near = (exact or batch).neighbours(ids, k, min_similarity)
    seen = set(ids) | {n for found in near.values() for n, _ in found}
    mates = batch.photo_mates(seen)
    states = batch.faces(seen | {m for found in mates.values() for m in found}, embeddings=exact is None)
    if exact is not None:  # the embeddings are in memory already: only the states were read
        for state in states.values():
            state.embedding = exact.vector(state.id)
    persons = batch.people({s.person for s in states.values() if s.person is not None})
    return BatchView(near, mates, states, persons, batch.rejections(seen))


class CorrectionSession(Protocol):
    """What corrections need from a store, in one transaction holding the gallery's write lock. People's sizes and
    sums are brought up to date when the session ends. Unknown faces and people raise NotFoundError."""

    def members(self, person: int) -> list[int]: ...

    def people_of(self, faces: Collection[int]) -> dict[int, int | None]: ...

    def assign(self, faces: Collection[int], person: int | None) -> None:
        """Pin ``faces`` to ``person`` (None: pinned unsorted)."""
        ...

    def pin(self, faces: Collection[int]) -> None:
        """Pin faces where they are."""
        ...

    def requeue(self, faces: Collection[int]) -> None:
        """Unpin ``faces``, take them out of their person and queue them to be placed again."""
        ...

    def start_person(self) -> int: ...

    def remove_person(self, person: int) -> None:
        """Delete a person whose faces went elsewhere (its subject, if any, stays)."""
        ...

    def reject(self, face: int, person: int) -> None:
        """Record that ``face`` is not ``person``."""
        ...

    def move_rejections(self, source: int, target: int) -> None: ...

    def name_of(self, person: int) -> str | None: ...

    def person_named(self, name: str) -> int | None: ...

    def set_name(self, person: int, name: str) -> None:
        """Make ``person`` the gallery's subject ``name`` (an existing subject of that name that no person has, or
        a new one; a named person's subject is renamed); its faces become that subject's."""
        ...

    def absorb_name(self, target: int, source: int) -> None:
        """Give ``target`` the named ``source``'s subject: take it over when ``target`` has no name, else merge it
        (with any faces enrolled under it) into ``target``'s subject."""
        ...

    def record(self, action: str, person: int | None, detail: Mapping[str, Any]) -> None:
        """Record the correction in the gallery's audit trail (ids and counts, never names), in its transaction."""
        ...


def encode_total(total: np.ndarray) -> bytes:
    """A person's sum of embeddings as stored: little-endian float64."""
    return np.asarray(total, dtype="<f8").tobytes()


def decode_total(blob: bytes | None, dim: int) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f8").copy() if blob else np.zeros(dim, np.float64)


def check_settings(settings: Mapping[str, Any]) -> str:
    """A gallery's grouping settings as compact JSON (a flat object of numbers, at most 4 KB)."""
    import json

    if not isinstance(settings, Mapping) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in settings.values()
    ):
        raise GalleryError("grouping settings are a JSON object of numbers")
    text = json.dumps(dict(settings), separators=(",", ":"), sort_keys=True, allow_nan=False)
    if len(text) > MAX_SETTINGS_BYTES:
        raise GalleryError("grouping settings are too large")
    return text


class ExactNeighbours:
    """Exact nearest neighbours among a fixed set of faces (matrix products, a block of queries at a time), with
    the visibility rule of :meth:`PlacementBatch.neighbours`: a face sees smaller ids and pinned faces."""

    BLOCK = 512  # queries per matrix product

    def __init__(self, ids: np.ndarray, embeddings: np.ndarray, pinned: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self.ids = np.asarray(ids, np.int64)[order]
        self.embeddings = np.ascontiguousarray(np.asarray(embeddings, np.float32)[order])
        self.pinned = np.asarray(pinned, bool)[order]
        self._row = {int(face): row for row, face in enumerate(self.ids)}

    def __contains__(self, face: int) -> bool:
        return face in self._row

    def vector(self, face: int) -> np.ndarray:
        return self.embeddings[self._row[face]]

    def neighbours(self, ids: Sequence[int], k: int, min_similarity: float) -> dict[int, list[tuple[int, float]]]:
        found: dict[int, list[tuple[int, float]]] = {}
        pinned = np.flatnonzero(self.pinned)
        for start in range(0, len(ids), self.BLOCK):
            block = np.asarray(ids[start : start + self.BLOCK], np.int64)
            rows = np.array([self._row[int(i)] for i in block], np.int64)
            # the faces visible to any of the block: those before its last one, and the pinned ones after it
            end = int(rows.max())
            columns = np.concatenate([np.arange(end), pinned[pinned >= end]])
            scores = self.embeddings[rows] @ self.embeddings[columns].T
            others = self.ids[columns][None, :]
            visible = ((others < block[:, None]) | self.pinned[columns][None, :]) & (others != block[:, None])
            scores[~visible | (scores < min_similarity)] = -np.inf
            for face, row in zip(block.tolist(), scores):
                top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
                top = top[np.isfinite(row[top])]
                chosen = columns[top]
                order = np.lexsort((self.ids[chosen], -row[top]))
                found[face] = [(int(self.ids[chosen[j]]), float(row[top[j]])) for j in order]
        return found
