"""A face gallery in one SQLite file: identities and their embeddings, tied to the model that made them.

Embeddings are float32 blobs with their dimension (no pickle); each row records the model (name and a fingerprint of
its weights), the source image's sha256 and the detected box. The file uses WAL journaling and every enrolment is one
transaction, so a crash or a concurrent reader never sees half an enrolment. Search is exact (one matrix product over
all embeddings, best score per identity); ``backend="faiss"`` uses an HNSW index for very large galleries.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .base import GalleryError, ModelId

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction before "database is locked"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    dim INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    source TEXT,
    face TEXT,
    created TEXT NOT NULL,
    UNIQUE (model_sha256, image_sha256)
);
CREATE INDEX IF NOT EXISTS embeddings_identity ON embeddings(identity_id);
"""


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _sqlite_errors(method: _Method) -> _Method:
    """Report SQLite failures (a locked or read-only file, a full disk) as a one-line :class:`GalleryError`."""

    @functools.wraps(method)
    def wrapper(self: Gallery, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.path}: {exc}") from None

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Enrolment:
    """One face to store: its L2-normalised embedding and where it came from."""

    embedding: np.ndarray
    image_sha256: str
    source: str = ""
    face: dict[str, Any] | None = None


@dataclass(frozen=True)
class IdentityRecord:
    name: str
    embeddings: int
    created: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise GalleryError(f"identity name {name!r} must be 1-200 printable characters")
    return name


class Gallery:
    """An identity gallery stored in the SQLite file ``path`` (created on first use unless ``create=False``)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise GalleryError(f"{self.path} is a folder; give a gallery file such as gallery.sqlite")
        if not self.path.exists() and not create:
            raise GalleryError(f"{self.path}: no such gallery (enrol someone first to create it)")
        if not self.path.parent.exists():
            raise GalleryError(f"{self.path.parent}: no such folder")
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise GalleryError(f"{self.path}: gallery schema v{version} is newer than this ghostfacenets")
            if version == 0:
                self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not a usable gallery file ({exc})") from None
        self._cache: tuple[tuple[int, int], np.ndarray, np.ndarray, list[str]] | None = None
        self._faiss: tuple[tuple[int, int], Any] | None = None
        self._changes = 0

    def _create_schema(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:  # not created meanwhile by another process
                if self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                    raise GalleryError(f"{self.path}: an SQLite file of something else, not a ghostfacenets gallery")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------------------------------------ housekeeping
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    @_sqlite_errors
    def model(self) -> ModelId | None:
        """The model whose embeddings this gallery holds (None while it is empty and unbound)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
        return ModelId(**json.loads(row[0])) if row else None

    def check_model(self, model: ModelId) -> None:
        """Refuse a model whose embeddings would not be comparable with the stored ones."""
        stored = self.model
        if stored is not None and (stored.sha256, stored.dim, stored.flip) != (model.sha256, model.dim, model.flip):
            raise GalleryError(
                f"{self.path} holds embeddings of {stored.describe()}, not of {model.describe()}; "
                "use the same model (--model) or another gallery file"
            )

    def _version(self) -> tuple[int, int]:
        """Changes when this or another connection commits a change."""
        return self._db.execute("PRAGMA data_version").fetchone()[0], self._changes

    # ------------------------------------------------------------------------------------------------ writing
    @_sqlite_errors
    def enroll(self, name: str, faces: Sequence[Enrolment], model: ModelId) -> int:
        """Add ``faces`` to identity ``name`` (created if new) in one transaction; returns how many were added
        (an image already enrolled for this identity is skipped; one enrolled for another identity is refused)."""
        name = _check_name(name)
        if not faces:
            raise GalleryError("nothing to enrol")
        for f in faces:
            if f.embedding.shape != (model.dim,) or not np.all(np.isfinite(f.embedding)):
                raise GalleryError(f"embedding of {f.source or 'a face'} is not a finite {model.dim}-d vector")
        added = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self.check_model(model)  # inside the transaction: a concurrent first enrolment cannot slip in
            if self.model is None:
                self._db.execute("INSERT INTO meta(key, value) VALUES ('model', ?)", (json.dumps(asdict(model)),))
            self._db.execute("INSERT OR IGNORE INTO identities(name, created) VALUES (?, ?)", (name, _now()))
            identity_id = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()[0]
            for f in faces:
                row = self._db.execute(
                    "SELECT i.name FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                    "WHERE e.model_sha256 = ? AND e.image_sha256 = ?",
                    (model.sha256, f.image_sha256),
                ).fetchone()
                if row is not None:
                    if row[0] != name:
                        raise GalleryError(f"{f.source or 'image'} is already enrolled as {row[0]!r}")
                    continue
                self._db.execute(
                    "INSERT INTO embeddings(identity_id, embedding, dim, model_name, model_sha256, image_sha256, "
                    "source, face, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        identity_id,
                        np.asarray(f.embedding, dtype="<f4").tobytes(),
                        model.dim,
                        model.name,
                        model.sha256,
                        f.image_sha256,
                        f.source,
                        json.dumps(f.face) if f.face else None,
                        _now(),
                    ),
                )
                added += 1
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._changes += 1
        return added

    @_sqlite_errors
    def remove(self, name: str) -> int:
        """Delete identity ``name`` (surrounding spaces ignored, as in :meth:`enroll`) and its embeddings; returns
        how many embeddings went."""
        name = _check_name(name)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise GalleryError(f"{self.path}: no identity named {name!r}")
            count = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", row).fetchone()[0]
            self._db.execute("DELETE FROM identities WHERE id = ?", row)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._changes += 1
        return count

    # ------------------------------------------------------------------------------------------------ reading
    @_sqlite_errors
    def identities(self) -> list[IdentityRecord]:
        """Every identity with its number of embeddings, by name."""
        rows = self._db.execute(
            "SELECT i.name, COUNT(e.id), i.created FROM identities i LEFT JOIN embeddings e ON e.identity_id = i.id "
            "GROUP BY i.id ORDER BY i.name"
        ).fetchall()
        return [IdentityRecord(*r) for r in rows]

    @_sqlite_errors
    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def _matrix(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All embeddings (E, D), the identity index of each row, and the identity names."""
        version = self._version()
        if self._cache is None or self._cache[0] != version:
            rows = self._db.execute(  # one query, so one snapshot: a concurrent enrolment is in it or not at all
                "SELECT e.identity_id, i.name, e.embedding, e.dim FROM embeddings e "
                "JOIN identities i ON i.id = e.identity_id ORDER BY e.id"
            ).fetchall()
            identities = sorted({r[0]: r[1] for r in rows}.items())  # by identity id
            names = [name for _, name in identities]
            index = {identity_id: i for i, (identity_id, _) in enumerate(identities)}
            dims = {r[3] for r in rows}
            if len(dims) > 1:
                raise GalleryError(f"{self.path}: embeddings of several sizes {sorted(dims)}; the file is damaged")
            dim = dims.pop() if dims else 0
            matrix = np.empty((len(rows), dim), dtype=np.float32)
            for i, (_, _, blob, d) in enumerate(rows):
                if len(blob) != 4 * d:
                    raise GalleryError(f"{self.path}: an embedding blob has {len(blob)} bytes, not {4 * d}")
                matrix[i] = np.frombuffer(blob, dtype="<f4")
            owners = np.array([index[r[0]] for r in rows], dtype=np.int64)
            self._cache = (version, matrix, owners, names)
        return self._cache[1], self._cache[2], self._cache[3]

    @_sqlite_errors
    def search(
        self, queries: np.ndarray, model: ModelId, k: int = 5, backend: str = "exact"
    ) -> list[list[tuple[str, float]]]:
        """For each L2-normalised query (Q, D): the ``k`` best identities as (name, cosine similarity), best first;
        an identity scores the best of its embeddings. ``backend``: "exact" (matrix product) or "faiss" (HNSW,
        approximate, for galleries of millions of faces)."""
        self.check_model(model)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != model.dim:
            raise GalleryError(f"queries have {queries.shape[1]} dimensions, the model gives {model.dim}")
        if k < 1:
            raise GalleryError("k must be at least 1")
        matrix, owners, names = self._matrix()
        if len(matrix) == 0:
            return [[] for _ in queries]
        if backend == "exact":
            scores = queries @ matrix.T
            columns = np.broadcast_to(np.arange(len(matrix)), scores.shape)
        elif backend == "faiss":
            scores, columns = self._faiss_search(queries, matrix, k)
        else:
            raise GalleryError(f"unknown search backend {backend!r}; use 'exact' or 'faiss'")
        results = []
        for row_scores, row_columns in zip(scores, columns):
            valid = row_columns >= 0
            best = np.full(len(names), -np.inf, dtype=np.float32)
            np.maximum.at(best, owners[row_columns[valid]], row_scores[valid])
            present = np.flatnonzero(np.isfinite(best))
            order = present[np.lexsort((present, -best[present]))][:k]
            results.append([(names[i], float(best[i])) for i in order])
        return results

    def _faiss_search(self, queries: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            import faiss
        except ImportError as exc:
            raise GalleryError("the faiss backend needs faiss-cpu: pip install 'ghostfacenets[faiss]'") from exc
        version = self._cache[0] if self._cache else (-1, -1)
        if self._faiss is None or self._faiss[0] != version:
            index = faiss.IndexHNSWFlat(matrix.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.add(np.ascontiguousarray(matrix))
            self._faiss = (version, index)
        index = self._faiss[1]
        neighbours = min(len(matrix), max(8 * k, 64))
        index.hnsw.efSearch = max(2 * neighbours, 128)
        return index.search(np.ascontiguousarray(queries), neighbours)
