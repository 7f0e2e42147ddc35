"""The gallery interface: a store of named galleries, their subjects (people) and faces (embeddings), and API keys.

Two implementations sit behind :class:`GalleryStore`: SQLite (one file, the embedded default; :mod:`.sqlite`) and
PostgreSQL with pgvector (shared by many workers and machines; :mod:`.postgres`). :func:`open_store` picks one from
``--db``: ``postgresql://...`` (or ``postgres://``) means PostgreSQL, anything else is an SQLite file path. Nothing
outside this package knows which backend it talks to.

Rules every backend keeps (one test suite, parametrised over both, checks them):

* A gallery is bound to the model of its first face (:class:`ModelId`: weights fingerprint, embedding size, flip);
  faces or queries of another model are refused with :class:`ModelMismatchError`.
* Every write is one transaction: an enrolment stores all of its faces or none; a deleted subject leaves no row.
* An image (by sha256) is enrolled at most once per gallery: again for the same subject it is skipped (so a bulk
  enrolment can be re-run to resume), for another subject it is a :class:`ConflictError`.
* Subject names are unique within a gallery. Ids are positive integers, unique within the store, never reused.
* Search scores a subject by its best face (cosine similarity of L2-normalised embeddings), best subjects first.
* No photo is stored; only an aligned 112x112 crop, when the caller passes one (``--store-crops``).
* API keys are stored as sha256 hashes of their secret; the secret is returned once, at creation.
* A store may be used from several threads; several processes and machines may share one database.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..errors import GhostFaceNetsError

DEFAULT_GALLERY = "default"
ROLES = ("admin", "identify")
Role = Literal["admin", "identify"]


class GalleryError(GhostFaceNetsError):
    """A gallery store that cannot be used as asked (unreachable, damaged, newer schema, bad input)."""


class NotFoundError(GalleryError):
    """No gallery, subject, face or key of that name or id."""


class ConflictError(GalleryError):
    """The write contradicts what is stored: a name in use, an image enrolled for another subject."""


class ModelMismatchError(GalleryError):
    """Embeddings of another model (weights, size or flip) than the gallery's."""


@dataclass(frozen=True)
class ModelId:
    """What makes embeddings comparable: the weights (sha256 fingerprint), flip TTA and the embedding size."""

    name: str
    sha256: str
    dim: int
    flip: bool

    def describe(self) -> str:
        return f"{self.name} (weights sha256 {self.sha256[:12]}, {self.dim}-d, flip {'on' if self.flip else 'off'})"

    def compatible(self, other: ModelId) -> bool:
        """Same embedding space (the name is only a label)."""
        return (self.sha256, self.dim, self.flip) == (other.sha256, other.dim, other.flip)


@dataclass(frozen=True)
class GalleryInfo:
    """A named gallery, the model its faces come from (None while empty and unbound) and its sizes."""

    name: str
    model: ModelId | None
    subjects: int
    faces: int
    created: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Subject:
    """A person in a gallery."""

    id: int
    gallery: str
    name: str
    metadata: dict[str, Any]
    faces: int
    created: str
    updated: str


@dataclass(frozen=True)
class NewFace:
    """A face to enrol: its L2-normalised embedding and where it came from. ``detection``: the detector's record
    (``box``, ``score``, ``landmarks``, ...) or None for an aligned crop given as is; ``crop``: the aligned 112x112
    crop as PNG bytes, only when the caller opted in to keeping crops."""

    embedding: np.ndarray
    image_sha256: str
    source: str = ""
    detection: dict[str, Any] | None = None
    crop: bytes | None = None


@dataclass(frozen=True)
class StoredFace:
    """A face as stored (no embedding; :meth:`GalleryStore.export_faces` gives those)."""

    id: int
    subject_id: int
    image_sha256: str
    source: str
    detection: dict[str, Any] | None
    model_name: str
    model_sha256: str
    has_crop: bool
    created: str


@dataclass(frozen=True)
class Enrolled:
    """What one enrolment did: the subject after it, the faces added, and the images skipped because the subject
    already had them."""

    subject: Subject
    added: list[StoredFace]
    skipped: list[str] = field(default_factory=list)  # image sha256s


@dataclass(frozen=True)
class Candidate:
    """A subject found by a search, with its best face's cosine similarity to the query."""

    subject_id: int
    name: str
    similarity: float


@dataclass(frozen=True)
class ExportedFace:
    """One face with everything needed to rebuild it in another store (``gallery export/import``)."""

    gallery: str
    subject: str
    subject_metadata: dict[str, Any]
    face: NewFace
    model: ModelId


@dataclass(frozen=True)
class ApiKey:
    """An API key's record (never its secret). ``gallery`` None: every gallery."""

    id: int
    role: Role
    gallery: str | None
    label: str
    created: str
    last_used: str | None
    revoked: bool


@runtime_checkable
class GalleryStore(Protocol):
    """A database of galleries. Methods raise :class:`NotFoundError`, :class:`ConflictError`,
    :class:`ModelMismatchError` or another :class:`GalleryError` (one clear line, never a driver traceback)."""

    location: str  # the file path or the URL without its password, for messages

    # -------------------------------------------------------------------------------------------- galleries
    def create_gallery(self, name: str, exist_ok: bool = False) -> GalleryInfo: ...

    def galleries(self) -> list[GalleryInfo]: ...

    def gallery(self, name: str) -> GalleryInfo: ...

    def delete_gallery(self, name: str) -> None:
        """Delete a gallery with every subject and face in it."""
        ...

    # -------------------------------------------------------------------------------------------- subjects
    def add_subject(self, gallery: str, name: str, metadata: Mapping[str, Any] | None = None) -> Subject: ...

    def subject(self, gallery: str, subject_id: int) -> Subject: ...

    def find_subject(self, gallery: str, name: str) -> Subject | None: ...

    def subjects(self, gallery: str, after: int | None = None, limit: int = 100) -> list[Subject]:
        """Subjects by id, those with an id above ``after`` (a cursor: the last id of the previous page)."""
        ...

    def update_subject(
        self, gallery: str, subject_id: int, name: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Subject: ...

    def delete_subject(self, gallery: str, subject_id: int) -> int:
        """Delete a subject and every face of it; returns how many faces went."""
        ...

    # -------------------------------------------------------------------------------------------- faces
    def enroll(
        self,
        gallery: str,
        name: str,
        faces: Sequence[NewFace],
        model: ModelId,
        metadata: Mapping[str, Any] | None = None,
        create_gallery: bool = True,
    ) -> Enrolled:
        """Add ``faces`` to the subject called ``name`` (created, with ``metadata``, if new; the gallery too when
        ``create_gallery``), all in one transaction."""
        ...

    def add_faces(self, gallery: str, subject_id: int, faces: Sequence[NewFace], model: ModelId) -> Enrolled:
        """Add ``faces`` to an existing subject, all in one transaction."""
        ...

    def faces(self, gallery: str, subject_id: int) -> list[StoredFace]: ...

    def delete_face(self, gallery: str, face_id: int) -> None: ...

    def enrolled_images(self, gallery: str) -> dict[str, str]:
        """image sha256 -> subject name, for every face of the gallery (what a resumed bulk enrolment skips)."""
        ...

    # -------------------------------------------------------------------------------------------- search
    def search(self, gallery: str, queries: np.ndarray, model: ModelId, k: int = 5) -> list[list[Candidate]]:
        """For each L2-normalised query (Q, D): the ``k`` best subjects, best first."""
        ...

    # -------------------------------------------------------------------------------------------- moving, re-embedding
    def export_faces(self, gallery: str) -> Iterator[ExportedFace]: ...

    def crops(self, gallery: str) -> Iterator[tuple[int, bytes]]:
        """(face id, aligned crop PNG) of every face stored with its crop."""
        ...

    def replace_embeddings(self, gallery: str, embeddings: Mapping[int, np.ndarray], model: ModelId) -> None:
        """Give every face of the gallery a new embedding of ``model`` (face id -> embedding; all faces, in one
        transaction) and bind the gallery to ``model``."""
        ...

    # -------------------------------------------------------------------------------------------- API keys
    def create_key(self, role: Role, gallery: str | None = None, label: str = "") -> tuple[ApiKey, str]:
        """A new key: its record and its secret (shown once; only its hash is stored)."""
        ...

    def keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: int) -> ApiKey: ...

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key with this secret (and its last use recorded), else None."""
        ...

    # -------------------------------------------------------------------------------------------- housekeeping
    def ping(self) -> None:
        """Raise :class:`GalleryError` unless the database answers."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> GalleryStore: ...

    def __exit__(self, *exc: object) -> None: ...
