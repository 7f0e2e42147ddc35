"""The gallery interface: a store of named galleries, their subjects (people) and faces (embeddings), and API keys.

Two implementations sit behind :class:`GalleryStore`: SQLite (one file, the embedded default; :mod:`.sqlite`) and
PostgreSQL with pgvector (shared by many workers and machines; :mod:`.postgres`). :func:`.stores.open_store` picks
one from ``--db``. Nothing outside this package knows which backend it talks to.

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

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..errors import GhostFaceNetsError

if TYPE_CHECKING:
    from .audit import AuditEvent

DEFAULT_GALLERY = "default"
ROLES = ("admin", "identify")
Role = Literal["admin", "identify"]
# What a key may do beyond its role's routes (admin keys may do all of it): see the candidates below the threshold
# (and lower it) when identifying; list a gallery's subjects with their metadata and their faces' records.
PERMISSIONS = ("see-candidates", "list-subjects")
MAX_METADATA_BYTES = 65_536  # a subject's metadata, as JSON
GALLERY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # galleries appear in URLs and file names


class GalleryError(GhostFaceNetsError):
    """A gallery store that cannot be used as asked (unreachable, damaged, newer schema, bad input)."""


class NotFoundError(GalleryError):
    """No gallery, subject, face or key of that name or id."""


class ConflictError(GalleryError):
    """The write contradicts what is stored: a name in use, an image enrolled for another subject."""


class ModelMismatchError(GalleryError):
    """Embeddings of another model (weights, size or flip) than the gallery's."""


class UnavailableError(GalleryError):
    """The database cannot be reached now (down, restarting, unreachable): nothing was done; try again later."""


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
    crops: int  # faces stored with their aligned crop (``gallery reembed`` needs every face to have one)
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
class Enrolment:
    """Faces of one subject to enrol (:meth:`GalleryStore.enroll_many`); ``metadata`` is used only when the
    subject is new."""

    name: str
    faces: Sequence[NewFace]
    metadata: Mapping[str, Any] | None = None


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
    """An API key's record (never its secret). ``gallery_id`` None: every gallery; otherwise the one gallery the key
    reaches, by id, and ``gallery`` its name (None once the gallery is gone: such a key reaches nothing).
    ``permissions``: some of :data:`PERMISSIONS` (an admin key has all of them)."""

    id: int
    role: Role
    gallery: str | None
    label: str
    created: str
    last_used: str | None
    revoked: bool
    gallery_id: int | None = None
    permissions: tuple[str, ...] = ()

    def can(self, permission: str) -> bool:
        """Whether the key has ``permission`` (one of :data:`PERMISSIONS`)."""
        return self.role == "admin" or permission in self.permissions

    def reaches(self, gallery: str) -> bool:
        """Whether the key may use the gallery named ``gallery`` (as it is now)."""
        return self.gallery_id is None or (self.gallery is not None and self.gallery == gallery)


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

    def enroll_many(
        self, gallery: str, enrolments: Sequence[Enrolment], model: ModelId, create_gallery: bool = True
    ) -> list[Enrolled]:
        """:meth:`enroll` for several subjects in one transaction (bulk enrolment and import): all or nothing."""
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

    # ------------------------------------------------------------------------------------ moving, re-embedding
    def export_faces(self, gallery: str) -> Iterator[ExportedFace]: ...

    def crops(self, gallery: str) -> Iterator[tuple[int, bytes]]:
        """(face id, aligned crop PNG) of every face stored with its crop."""
        ...

    def replace_embeddings(self, gallery: str, embeddings: Mapping[int, np.ndarray], model: ModelId) -> None:
        """Give every face of the gallery a new embedding of ``model`` (face id -> embedding; all faces, in one
        transaction) and bind the gallery to ``model``."""
        ...

    # -------------------------------------------------------------------------------------------- API keys
    def create_key(
        self, role: Role, gallery: str | None = None, label: str = "", permissions: Iterable[str] = ()
    ) -> tuple[ApiKey, str]:
        """A new key: its record and its secret (shown once; only its hash is stored)."""
        ...

    def keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: int) -> ApiKey: ...

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key with this secret (and its last use recorded), else None; None too for a key made for a
        gallery that no longer exists."""
        ...

    # -------------------------------------------------------------------------------------------- audit trail
    def audit(self, gallery: str | None = None, since: str | None = None, limit: int | None = None) -> list[AuditEvent]:
        """The recorded changes (:mod:`.audit`), oldest first: of one gallery, from an ISO 8601 time, the last
        ``limit``."""
        ...

    # -------------------------------------------------------------------------------------------- housekeeping
    def ping(self) -> None:
        """Raise :class:`GalleryError` unless the database answers."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> GalleryStore: ...

    def __exit__(self, *exc: object) -> None: ...


# ------------------------------------------------------------------------------------ checks both backends share
def utc_now() -> str:
    """Now as ISO 8601 UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_gallery_name(name: str) -> str:
    if not isinstance(name, str) or not GALLERY_NAME.fullmatch(name):
        raise GalleryError(
            f"gallery name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def check_subject_name(name: str) -> str:
    """A subject name without surrounding spaces: 1-200 printable characters."""
    stripped = name.strip() if isinstance(name, str) else ""
    if not stripped or len(stripped) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise GalleryError(f"subject name {name!r} must be 1-200 printable characters")
    return stripped


def check_metadata(metadata: Mapping[str, Any] | None) -> str:
    """Metadata as compact JSON: a JSON object of at most :data:`MAX_METADATA_BYTES`."""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping):
        raise GalleryError(f"metadata must be a JSON object, not {type(metadata).__name__}")
    try:
        text = json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"metadata is not JSON: {exc}") from None
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise GalleryError(f"metadata of {len(text.encode()):,} bytes is above the limit of {MAX_METADATA_BYTES:,}")
    return text


def check_model(gallery: str, stored: ModelId | None, model: ModelId) -> None:
    """Refuse ``model`` for a gallery bound to another embedding space."""
    if stored is not None and not stored.compatible(model):
        raise ModelMismatchError(
            f"gallery {gallery!r} holds embeddings of {stored.describe()}, not of {model.describe()}; "
            "use the same model (--model) or another gallery"
        )


def check_embedding(embedding: np.ndarray, model: ModelId, what: str = "a face") -> np.ndarray:
    """An L2-normalised finite float32 vector of the model's size."""
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.shape != (model.dim,) or not np.all(np.isfinite(vector)):
        raise ModelMismatchError(f"embedding of {what} is not a finite {model.dim}-d vector (shape {vector.shape})")
    if not math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-3):
        raise GalleryError(f"embedding of {what} is not L2-normalised (norm {np.linalg.norm(vector):.4f})")
    return vector


SHA256 = re.compile(r"[0-9a-f]{64}")


def check_faces(faces: Sequence[NewFace], model: ModelId) -> list[np.ndarray]:
    """The faces' embeddings, checked; refuses an empty list, bad hashes and bad vectors."""
    if not faces:
        raise GalleryError("nothing to enrol: no faces")
    vectors = []
    for face in faces:
        what = face.source or "a face"
        if not SHA256.fullmatch(face.image_sha256 or ""):
            raise GalleryError(f"image sha256 of {what} is not 64 lowercase hex digits")
        if face.crop is not None and not isinstance(face.crop, bytes):
            raise GalleryError(f"crop of {what} must be PNG bytes")
        vectors.append(check_embedding(face.embedding, model, what))
    return vectors


def check_queries(queries: np.ndarray, model: ModelId, k: int) -> np.ndarray:
    """Queries as float32 (Q, D) of the model's size; ``k`` at least 1."""
    array = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if array.ndim != 2 or array.shape[1] != model.dim:
        raise ModelMismatchError(f"queries shaped {array.shape} are not {model.dim}-d vectors of {model.describe()}")
    if not np.all(np.isfinite(array)):
        raise GalleryError("queries hold non-finite values")
    if not isinstance(k, int) or k < 1:
        raise GalleryError(f"k must be a positive integer, got {k!r}")
    return array


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise GalleryError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def check_permissions(permissions: Iterable[str]) -> tuple[str, ...]:
    """Known permissions, sorted, each once."""
    chosen = set(permissions)
    unknown = sorted(chosen - set(PERMISSIONS))
    if unknown:
        raise GalleryError(f"unknown permission(s) {', '.join(unknown)}; known: {', '.join(PERMISSIONS)}")
    return tuple(sorted(chosen))


def permissions_text(permissions: Iterable[str]) -> str:
    """Permissions as stored: comma-separated."""
    return ",".join(permissions)


def permissions_of(text: str | None) -> tuple[str, ...]:
    return tuple(p for p in (text or "").split(",") if p)


def new_secret() -> tuple[str, str]:
    """A new API key secret and the sha256 (hex) that is stored instead of it."""
    import secrets

    secret = "gfn_" + secrets.token_urlsafe(32)
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> str:
    import hashlib

    return hashlib.sha256(secret.encode()).hexdigest()


KEY_USE_RESOLUTION_S = 60  # ``last_used`` is rewritten at most once a minute, so authenticating stays a read


def check_label(label: str) -> str:
    if not isinstance(label, str) or len(label) > 200 or any(ord(c) < 32 for c in label):
        raise GalleryError("a key label must be at most 200 printable characters")
    return label


def check_replacement(location: str, gallery: str, stored: set[int], given: Iterable[int]) -> None:
    """Refuse a re-embedding that does not cover exactly the gallery's faces."""
    given = set(given)
    missing, unknown = stored - given, given - stored
    if missing:
        raise ConflictError(
            f"{location}: {len(missing)} face(s) of gallery {gallery!r} have no new embedding (e.g. face "
            f"{min(missing)}); faces enrolled without --store-crops cannot be re-embedded"
        )
    if unknown:
        raise NotFoundError(f"{location}: no face {min(unknown)} in gallery {gallery!r}")


def seconds_between(earlier: str, later: str) -> float:
    """Seconds from one ISO 8601 time to another."""
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
