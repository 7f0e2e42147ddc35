"""The gallery store in one SQLite file: the embedded default (:class:`SQLiteStore`).

Embeddings are little-endian float32 blobs (no pickle); the file uses WAL journaling, every write is one
``BEGIN IMMEDIATE`` transaction (a crash or a killed process leaves the last committed state), and several threads
(one connection each) and processes may use the same file. ``secure_delete`` overwrites deleted rows on disk.

Search is exact: one matrix product over the gallery's embeddings, kept in memory per gallery. Every write to a
gallery, from any process, bumps its ``generation``; a search that finds a newer generation than its cache reads,
in the same read transaction, only the faces added since (ids only grow: AUTOINCREMENT) and appends them, unless the
gallery's ``epoch`` moved too (bumped by deletions, re-embedding and renames, which change what the cache holds):
then it reloads the gallery whole. Either way the cache is one committed state of the gallery.

Schema versions (``PRAGMA user_version``): 1, one model and its ``identities``/``embeddings`` (ghostfacenets 0.1);
2, named galleries, subjects with metadata, faces, crops, API keys; 3, the galleries' ``epoch`` and an index of
faces by gallery. Older files are migrated on first open, in one transaction (a v1 file becomes gallery ``default``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import base
from .base import (
    KEY_USE_RESOLUTION_S,
    ApiKey,
    Candidate,
    ConflictError,
    Enrolled,
    Enrolment,
    ExportedFace,
    GalleryError,
    GalleryInfo,
    ModelId,
    NewFace,
    NotFoundError,
    Role,
    StoredFace,
    Subject,
)

SCHEMA_VERSION = 3
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction before "database is locked"
CACHED_GALLERIES = 4  # embedding matrices kept in memory (least recently searched dropped first)
FETCH_ROWS = 8192  # faces read at a time into the cache

_SCHEMA = """
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    dim INTEGER NOT NULL,
    flip INTEGER NOT NULL,
    UNIQUE (name, sha256, dim, flip)
);
CREATE TABLE galleries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    model_id INTEGER REFERENCES models(id),
    generation INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE subjects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    UNIQUE (gallery_id, name)
);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES models(id),
    embedding BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    detection TEXT,
    created TEXT NOT NULL,
    UNIQUE (gallery_id, image_sha256)
);
CREATE INDEX faces_subject ON faces(subject_id);
CREATE INDEX faces_gallery ON faces(gallery_id);
CREATE TABLE crops (
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    png BLOB NOT NULL
);
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    secret_sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    gallery_id INTEGER REFERENCES galleries(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    created TEXT NOT NULL,
    last_used TEXT,
    revoked TEXT
);
"""

_MIGRATE_V1 = """
INSERT INTO galleries (id, name, model_id, created)
    SELECT 1, 'default', (SELECT id FROM models), COALESCE((SELECT MIN(created) FROM identities), :now);
INSERT INTO subjects (id, gallery_id, name, metadata, created, updated)
    SELECT id, 1, name, '{}', created, created FROM identities;
INSERT INTO faces (id, gallery_id, subject_id, model_id, embedding, image_sha256, source, detection, created)
    SELECT id, 1, identity_id, (SELECT id FROM models), embedding, image_sha256, COALESCE(source, ''), face, created
    FROM embeddings;
DROP TABLE embeddings;
DROP TABLE identities;
DROP TABLE meta
"""

# v2 -> v3. faces_gallery holds (gallery_id, rowid): a gallery's faces in id order, and those after an id, read
# without sorting (the search cache's loads and appends).
_MIGRATE_V2 = """
ALTER TABLE galleries ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
CREATE INDEX faces_gallery ON faces(gallery_id)
"""

_SUBJECT_COLUMNS = (
    "s.id, g.name, s.name, s.metadata, (SELECT COUNT(*) FROM faces f WHERE f.subject_id = s.id), s.created, s.updated"
)
_FACE_COLUMNS = (
    "f.id, f.subject_id, f.image_sha256, f.source, f.detection, m.name, m.sha256, "
    "EXISTS (SELECT 1 FROM crops c WHERE c.face_id = f.id), f.created"
)


class _Rows:
    """A float32 matrix that grows at its end. A cache snapshot sees its first ``count`` rows, which never change:
    an append writes past every snapshot's rows (or into a copy), so the snapshots of a gallery share one buffer."""

    def __init__(self, dim: int, used: int) -> None:
        self.array = np.empty((used + max(256, used // 16), dim), dtype=np.float32)  # room for enrolments to come
        self.used = used  # rows written or reserved


@dataclass(frozen=True)
class _Matrix:
    """A gallery's embeddings in memory, in face-id order, and how they group by subject: ``order`` lists the rows
    subject by subject (None when they already are), group i starts at ``starts[i]`` and is ``subject_ids[i]``'s."""

    generation: int
    epoch: int
    model: ModelId | None
    rows: _Rows
    count: int
    last_face: int  # the largest face id held: the faces added later have larger ids
    face_subjects: np.ndarray  # (count,) subject id of each row
    order: np.ndarray | None
    starts: np.ndarray
    subject_ids: np.ndarray
    names: dict[int, str]  # subject id -> name; appends add to it (renames reload, so no name ever changes)

    @property
    def embeddings(self) -> np.ndarray:
        return self.rows.array[: self.count]


def _grouping(face_subjects: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(order, starts, subject ids) of rows whose subjects are ``face_subjects``."""
    grouped = bool(np.all(face_subjects[1:] >= face_subjects[:-1]))
    order = None if grouped else np.argsort(face_subjects, kind="stable")
    ordered = face_subjects if order is None else face_subjects[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.zeros(0, np.int64)
    return order, starts, ordered[starts]


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])


def _face(row: Sequence[Any]) -> StoredFace:
    detection = json.loads(row[4]) if row[4] else None
    return StoredFace(row[0], row[1], row[2], row[3], detection, row[5], row[6], bool(row[7]), row[8])


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6] is not None)


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class SQLiteStore:
    """Galleries in the SQLite file ``path`` (created on first use unless ``create=False``)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        if self.path.is_dir():
            raise GalleryError(f"{self.path} is a folder; give a gallery file such as gallery.sqlite")
        if not self.path.exists() and not create:
            raise NotFoundError(f"{self.path}: no such gallery file (enrol someone first to create it)")
        if not self.path.parent.is_dir():
            raise GalleryError(f"{self.path.parent}: no such folder")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards the connection list and the matrix cache
        self._matrices: OrderedDict[int, _Matrix] = OrderedDict()
        self._closed = False
        try:
            self._migrate(self._db())
        except sqlite3.DatabaseError as exc:
            self.close()
            raise GalleryError(f"{self.path}: not a usable gallery file ({exc})") from None
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------------ connections
    def _db(self) -> sqlite3.Connection:
        """This thread's connection."""
        if self._closed:
            raise GalleryError(f"{self.path}: the gallery store is closed")
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA secure_delete = ON")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path}: gallery schema v{version} is newer than this ghostfacenets (v{SCHEMA_VERSION}); "
                "upgrade ghostfacenets"
            )
        if version == SCHEMA_VERSION:
            return
        db.execute("PRAGMA journal_mode = WAL")  # persistent; cannot change inside a transaction
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated meanwhile
            if version == 0:
                if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                    raise GalleryError(f"{self.path}: an SQLite file of something else, not a ghostfacenets gallery")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
            elif version == 1:
                self._migrate_v1(db)
            elif version == 2:
                for statement in _MIGRATE_V2.split(";"):
                    db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _migrate_v1(self, db: sqlite3.Connection) -> None:
        """v1 (one model in ``meta``, ``identities``, ``embeddings``) -> v2, as gallery ``default``."""
        row = db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        if row is not None:
            model = ModelId(**json.loads(row[0]))
            db.execute(
                "INSERT INTO models (name, sha256, dim, flip) VALUES (?, ?, ?, ?)",
                (model.name, model.sha256, model.dim, int(model.flip)),
            )
        elif db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]:
            raise GalleryError(f"{self.path}: a v1 gallery with embeddings but no model record; the file is damaged")
        for statement in filter(str.strip, _MIGRATE_V1.split(";")):
            db.execute(statement, {"now": base.utc_now()} if ":now" in statement else {})

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction on this thread's connection (IMMEDIATE for writes: the write lock is taken up front, so
        what is read inside stays true until the commit); SQLite failures become one-line GalleryErrors."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.path}: {exc}") from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise GalleryError(f"{self.path}: {exc}") from None
            raise

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own for a long read (an export), in one read transaction: a snapshot that the
        caller may consume slowly while this thread's connection goes on writing."""
        if self._closed:
            raise GalleryError(f"{self.path}: the gallery store is closed")
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            db.execute("BEGIN")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.path}: {exc}") from None
        finally:
            db.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            self._matrices.clear()
        self._closed = True
        for db in connections:
            db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        with self._transaction(write=False) as db:
            db.execute("SELECT COUNT(*) FROM galleries").fetchone()

    # ------------------------------------------------------------------------------------------------ helpers
    def _gallery_row(self, db: sqlite3.Connection, name: str) -> tuple[int, ModelId | None]:
        row = db.execute(
            "SELECT g.id, m.name, m.sha256, m.dim, m.flip FROM galleries g LEFT JOIN models m ON m.id = g.model_id "
            "WHERE g.name = ?",
            (base.check_gallery_name(name),),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no gallery named {name!r}")
        return row[0], ModelId(row[1], row[2], row[3], bool(row[4])) if row[1] is not None else None

    def _model_id(self, db: sqlite3.Connection, model: ModelId) -> int:
        key = (model.name, model.sha256, model.dim, int(model.flip))
        db.execute("INSERT OR IGNORE INTO models (name, sha256, dim, flip) VALUES (?, ?, ?, ?)", key)
        row = db.execute("SELECT id FROM models WHERE name = ? AND sha256 = ? AND dim = ? AND flip = ?", key)
        return int(row.fetchone()[0])

    def _touch(self, db: sqlite3.Connection, gallery_id: int, rewrite: bool = False) -> None:
        """Mark the gallery changed: search caches in every process catch up, appending the faces added since they
        read it, or, after a ``rewrite`` (faces deleted or re-embedded, subjects renamed), reloading it whole."""
        db.execute(
            "UPDATE galleries SET generation = generation + 1, epoch = epoch + ? WHERE id = ?",
            (int(rewrite), gallery_id),
        )

    def _info(self, db: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[GalleryInfo]:
        rows = db.execute(
            "SELECT g.name, m.name, m.sha256, m.dim, m.flip, "
            "(SELECT COUNT(*) FROM subjects s WHERE s.gallery_id = g.id), "
            "(SELECT COUNT(*) FROM faces f WHERE f.gallery_id = g.id), "
            "(SELECT COUNT(*) FROM faces f JOIN crops c ON c.face_id = f.id WHERE f.gallery_id = g.id), g.created "
            f"FROM galleries g LEFT JOIN models m ON m.id = g.model_id {where} ORDER BY g.name",
            params,
        ).fetchall()
        return [
            GalleryInfo(r[0], ModelId(r[1], r[2], r[3], bool(r[4])) if r[1] is not None else None, *r[5:]) for r in rows
        ]

    def _subject_row(self, db: sqlite3.Connection, gallery_id: int, gallery: str, subject_id: int) -> Subject:
        row = db.execute(
            f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
            "WHERE s.id = ? AND s.gallery_id = ?",
            (subject_id, gallery_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no subject {subject_id} in gallery {gallery!r}")
        return _subject(row)

    def _stored_faces(self, db: sqlite3.Connection, face_ids: Sequence[int]) -> list[StoredFace]:
        faces = []
        for face_id in face_ids:
            row = db.execute(
                f"SELECT {_FACE_COLUMNS} FROM faces f JOIN models m ON m.id = f.model_id WHERE f.id = ?", (face_id,)
            ).fetchone()
            faces.append(_face(row))
        return faces

    # ------------------------------------------------------------------------------------------------ galleries
    def create_gallery(self, name: str, exist_ok: bool = False) -> GalleryInfo:
        base.check_gallery_name(name)
        with self._transaction(write=True) as db:
            if db.execute("SELECT 1 FROM galleries WHERE name = ?", (name,)).fetchone():
                if not exist_ok:
                    raise ConflictError(f"{self.path}: a gallery named {name!r} exists already")
            else:
                db.execute("INSERT INTO galleries (name, created) VALUES (?, ?)", (name, base.utc_now()))
            return self._info(db, "WHERE g.name = ?", (name,))[0]

    def galleries(self) -> list[GalleryInfo]:
        with self._transaction(write=False) as db:
            return self._info(db, "", ())

    def gallery(self, name: str) -> GalleryInfo:
        with self._transaction(write=False) as db:
            self._gallery_row(db, name)
            return self._info(db, "WHERE g.name = ?", (name,))[0]

    def delete_gallery(self, name: str) -> None:
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_row(db, name)
            db.execute("DELETE FROM galleries WHERE id = ?", (gallery_id,))

    # ------------------------------------------------------------------------------------------------ subjects
    def add_subject(self, gallery: str, name: str, metadata: Mapping[str, Any] | None = None) -> Subject:
        name, text = base.check_subject_name(name), base.check_metadata(metadata)
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            subject_id = self._insert_subject(db, gallery_id, gallery, name, text)
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def _insert_subject(self, db: sqlite3.Connection, gallery_id: int, gallery: str, name: str, metadata: str) -> int:
        if db.execute("SELECT 1 FROM subjects WHERE gallery_id = ? AND name = ?", (gallery_id, name)).fetchone():
            raise ConflictError(f"{self.path}: gallery {gallery!r} has a subject named {name!r} already")
        now = base.utc_now()
        cursor = db.execute(
            "INSERT INTO subjects (gallery_id, name, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
            (gallery_id, name, metadata, now, now),
        )
        return int(cursor.lastrowid or 0)

    def subject(self, gallery: str, subject_id: int) -> Subject:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def find_subject(self, gallery: str, name: str) -> Subject | None:
        name = base.check_subject_name(name)
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            row = db.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.gallery_id = ? AND s.name = ?",
                (gallery_id, name),
            ).fetchone()
            return _subject(row) if row else None

    def subjects(self, gallery: str, after: int | None = None, limit: int = 100) -> list[Subject]:
        if limit < 1:
            raise GalleryError(f"limit must be at least 1, got {limit}")
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.gallery_id = ? AND s.id > ? ORDER BY s.id LIMIT ?",
                (gallery_id, after or 0, limit),
            ).fetchall()
            return [_subject(r) for r in rows]

    def update_subject(
        self, gallery: str, subject_id: int, name: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Subject:
        new_name = base.check_subject_name(name) if name is not None else None
        text = base.check_metadata(metadata) if metadata is not None else None
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            current = self._subject_row(db, gallery_id, gallery, subject_id)
            if new_name is not None and new_name != current.name:
                if db.execute(
                    "SELECT 1 FROM subjects WHERE gallery_id = ? AND name = ?", (gallery_id, new_name)
                ).fetchone():
                    raise ConflictError(f"{self.path}: gallery {gallery!r} has a subject named {new_name!r} already")
                db.execute("UPDATE subjects SET name = ? WHERE id = ?", (new_name, subject_id))
                self._touch(db, gallery_id, rewrite=True)
            if text is not None:
                db.execute("UPDATE subjects SET metadata = ? WHERE id = ?", (text, subject_id))
            db.execute("UPDATE subjects SET updated = ? WHERE id = ?", (base.utc_now(), subject_id))
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def delete_subject(self, gallery: str, subject_id: int) -> int:
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            subject = self._subject_row(db, gallery_id, gallery, subject_id)
            db.execute("DELETE FROM subjects WHERE id = ?", (subject_id,))
            self._touch(db, gallery_id, rewrite=True)
            return subject.faces

    # ------------------------------------------------------------------------------------------------ faces
    def enroll(
        self,
        gallery: str,
        name: str,
        faces: Sequence[NewFace],
        model: ModelId,
        metadata: Mapping[str, Any] | None = None,
        create_gallery: bool = True,
    ) -> Enrolled:
        return self.enroll_many(gallery, [Enrolment(name, faces, metadata)], model, create_gallery)[0]

    def enroll_many(
        self, gallery: str, enrolments: Sequence[Enrolment], model: ModelId, create_gallery: bool = True
    ) -> list[Enrolled]:
        base.check_gallery_name(gallery)
        checked = [
            (base.check_subject_name(e.name), base.check_metadata(e.metadata), base.check_faces(e.faces, model))
            for e in enrolments
        ]
        with self._transaction(write=True) as db:
            if create_gallery:
                db.execute("INSERT OR IGNORE INTO galleries (name, created) VALUES (?, ?)", (gallery, base.utc_now()))
            gallery_id, stored = self._gallery_row(db, gallery)
            base.check_model(gallery, stored, model)
            model_id = self._model_id(db, model)
            if stored is None:
                db.execute("UPDATE galleries SET model_id = ? WHERE id = ?", (model_id, gallery_id))
            results = []
            for enrolment, (name, metadata, vectors) in zip(enrolments, checked):
                row = db.execute("SELECT id FROM subjects WHERE gallery_id = ? AND name = ?", (gallery_id, name))
                found = row.fetchone()
                subject_id = found[0] if found else self._insert_subject(db, gallery_id, gallery, name, metadata)
                added, skipped = [], []
                for face, vector in zip(enrolment.faces, vectors):
                    owner = db.execute(
                        "SELECT f.subject_id, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                        "WHERE f.gallery_id = ? AND f.image_sha256 = ?",
                        (gallery_id, face.image_sha256),
                    ).fetchone()
                    if owner is not None:
                        if owner[0] != subject_id:
                            raise ConflictError(
                                f"{face.source or 'image ' + face.image_sha256[:12]} is already enrolled as "
                                f"{owner[1]!r} in gallery {gallery!r}"
                            )
                        skipped.append(face.image_sha256)
                        continue
                    cursor = db.execute(
                        "INSERT INTO faces (gallery_id, subject_id, model_id, embedding, image_sha256, source, "
                        "detection, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            gallery_id,
                            subject_id,
                            model_id,
                            _blob(vector),
                            face.image_sha256,
                            face.source,
                            json.dumps(face.detection) if face.detection is not None else None,
                            base.utc_now(),
                        ),
                    )
                    if face.crop is not None:
                        db.execute("INSERT INTO crops (face_id, png) VALUES (?, ?)", (cursor.lastrowid, face.crop))
                    added.append(int(cursor.lastrowid or 0))
                if added:
                    db.execute("UPDATE subjects SET updated = ? WHERE id = ?", (base.utc_now(), subject_id))
                results.append((subject_id, added, skipped))
            self._touch(db, gallery_id)
            return [
                Enrolled(self._subject_row(db, gallery_id, gallery, s), self._stored_faces(db, a), k)
                for s, a, k in results
            ]

    def add_faces(self, gallery: str, subject_id: int, faces: Sequence[NewFace], model: ModelId) -> Enrolled:
        subject = self.subject(gallery, subject_id)
        # by name, in a transaction that refuses a subject renamed or deleted meanwhile
        enrolled = self.enroll(gallery, subject.name, faces, model, create_gallery=False)
        if enrolled.subject.id != subject_id:
            raise ConflictError(f"{self.path}: subject {subject_id} changed while faces were added; try again")
        return enrolled

    def faces(self, gallery: str, subject_id: int) -> list[StoredFace]:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            self._subject_row(db, gallery_id, gallery, subject_id)
            rows = db.execute(
                f"SELECT {_FACE_COLUMNS} FROM faces f JOIN models m ON m.id = f.model_id "
                "WHERE f.subject_id = ? ORDER BY f.id",
                (subject_id,),
            ).fetchall()
            return [_face(r) for r in rows]

    def delete_face(self, gallery: str, face_id: int) -> None:
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            cursor = db.execute("DELETE FROM faces WHERE id = ? AND gallery_id = ?", (face_id, gallery_id))
            if cursor.rowcount == 0:
                raise NotFoundError(f"{self.path}: no face {face_id} in gallery {gallery!r}")
            self._touch(db, gallery_id, rewrite=True)

    def enrolled_images(self, gallery: str) -> dict[str, str]:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                "SELECT f.image_sha256, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                "WHERE f.gallery_id = ?",
                (gallery_id,),
            )
            return dict(rows.fetchall())

    # ------------------------------------------------------------------------------------------------ search
    def _matrix(self, gallery: str) -> _Matrix:
        """The gallery's embeddings: the cached ones, brought up to date within one read transaction (a write of
        another thread or process is in them whole or not at all)."""
        with self._transaction(write=False) as db:
            gallery_id, model = self._gallery_row(db, gallery)
            generation, epoch = db.execute(
                "SELECT generation, epoch FROM galleries WHERE id = ?", (gallery_id,)
            ).fetchone()
            with self._lock:
                cached = self._matrices.get(gallery_id)
                if cached is not None and cached.generation >= generation:  # a newer cache is a committed state too
                    self._matrices.move_to_end(gallery_id)
                    return cached
            if cached is not None and cached.epoch == epoch and cached.count:
                matrix = self._append(db, gallery, gallery_id, cached, generation)
            else:
                matrix = self._load(db, gallery, gallery_id, model, generation, epoch)
        with self._lock:
            current = self._matrices.get(gallery_id)
            if current is None or current.generation < matrix.generation:
                self._matrices[gallery_id] = matrix
            self._matrices.move_to_end(gallery_id)
            while len(self._matrices) > CACHED_GALLERIES:
                self._matrices.popitem(last=False)
        return matrix

    def _read_faces(
        self, db: sqlite3.Connection, gallery: str, target: np.ndarray, where: str, params: tuple[Any, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Copy the embeddings of the faces ``where`` selects, by id, into ``target`` (one row each, a batch at a
        time); returns their ids and subject ids."""
        count, dim = target.shape
        ids, subjects = np.empty(count, np.int64), np.empty(count, np.int64)
        cursor = db.execute(f"SELECT id, subject_id, embedding FROM faces WHERE {where} ORDER BY id", params)
        done = 0
        while batch := cursor.fetchmany(FETCH_ROWS):
            blob = b"".join(row[2] for row in batch)
            if done + len(batch) > count or len(blob) != 4 * dim * len(batch):
                raise GalleryError(f"{self.path}: gallery {gallery!r} holds embeddings of another size than {dim}")
            target[done : done + len(batch)] = np.frombuffer(blob, dtype="<f4").reshape(len(batch), dim)
            ids[done : done + len(batch)] = [row[0] for row in batch]
            subjects[done : done + len(batch)] = [row[1] for row in batch]
            done += len(batch)
        return ids, subjects

    def _load(
        self, db: sqlite3.Connection, gallery: str, gallery_id: int, model: ModelId | None, generation: int, epoch: int
    ) -> _Matrix:
        """The gallery read whole."""
        count = db.execute("SELECT COUNT(*) FROM faces WHERE gallery_id = ?", (gallery_id,)).fetchone()[0]
        rows = _Rows(model.dim if model is not None else 0, count)
        ids, subjects = self._read_faces(db, gallery, rows.array[:count], "gallery_id = ?", (gallery_id,))
        names = dict(db.execute("SELECT id, name FROM subjects WHERE gallery_id = ?", (gallery_id,)).fetchall())
        last = int(ids[-1]) if count else 0
        return _Matrix(generation, epoch, model, rows, count, last, subjects, *_grouping(subjects), names)

    def _append(
        self, db: sqlite3.Connection, gallery: str, gallery_id: int, cached: _Matrix, generation: int
    ) -> _Matrix:
        """``cached`` with the faces added since it was read."""
        after = (gallery_id, cached.last_face)
        added = db.execute("SELECT COUNT(*) FROM faces WHERE gallery_id = ? AND id > ?", after).fetchone()[0]
        count = cached.count + added
        with self._lock:  # reserve rows past the cached ones: in the shared buffer if nobody wrote there yet
            rows = cached.rows
            if rows.used != cached.count or len(rows.array) < count:
                rows = _Rows(rows.array.shape[1], count)
                rows.array[: cached.count] = cached.embeddings
            rows.used = count
        new_rows = rows.array[cached.count : count]
        ids, subjects = self._read_faces(db, gallery, new_rows, "gallery_id = ? AND id > ?", after)
        unknown = sorted(set(subjects.tolist()) - cached.names.keys())
        if unknown:
            new_names = db.execute(
                "SELECT id, name FROM subjects WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(unknown),)
            )
            cached.names.update(new_names.fetchall())  # only additions: every snapshot's names stay as they were
        face_subjects = np.concatenate([cached.face_subjects, subjects])
        last = int(ids[-1]) if added else cached.last_face
        return _Matrix(
            generation, cached.epoch, cached.model, rows, count, last, face_subjects, *_grouping(face_subjects),
            cached.names,
        )  # fmt: skip

    def search(self, gallery: str, queries: np.ndarray, model: ModelId, k: int = 5) -> list[list[Candidate]]:
        queries = base.check_queries(queries, model, k)
        matrix = self._matrix(gallery)
        base.check_model(gallery, matrix.model, model)
        if matrix.count == 0:
            return [[] for _ in queries]
        scores = queries @ matrix.embeddings.T  # (Q, faces)
        if matrix.order is not None:
            scores = scores[:, matrix.order]
        best = np.maximum.reduceat(scores, matrix.starts, axis=1)  # (Q, subjects): each subject's best face
        results = []
        for row in best:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            top = top[np.lexsort((matrix.subject_ids[top], -row[top]))]  # best first, then the older subject
            results.append(
                [
                    Candidate(int(matrix.subject_ids[i]), matrix.names[int(matrix.subject_ids[i])],
                              float(np.clip(row[i], -1, 1)))
                    for i in top
                ]
            )  # fmt: skip
        return results

    # ---------------------------------------------------------------------------------------- moving, re-embedding
    def export_faces(self, gallery: str) -> Iterator[ExportedFace]:
        with self._reader() as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                "SELECT s.name, s.metadata, f.embedding, f.image_sha256, f.source, f.detection, c.png, "
                "m.name, m.sha256, m.dim, m.flip FROM faces f JOIN subjects s ON s.id = f.subject_id "
                "JOIN models m ON m.id = f.model_id LEFT JOIN crops c ON c.face_id = f.id "
                "WHERE f.gallery_id = ? ORDER BY f.subject_id, f.id",
                (gallery_id,),
            )
            for row in rows:
                model = ModelId(row[7], row[8], row[9], bool(row[10]))
                face = NewFace(
                    np.frombuffer(row[2], dtype="<f4").copy(),
                    row[3],
                    row[4],
                    json.loads(row[5]) if row[5] else None,
                    row[6],
                )
                yield ExportedFace(gallery, row[0], json.loads(row[1]), face, model)

    def crops(self, gallery: str) -> Iterator[tuple[int, bytes]]:
        with self._reader() as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                "SELECT f.id, c.png FROM faces f JOIN crops c ON c.face_id = f.id WHERE f.gallery_id = ? ORDER BY f.id",
                (gallery_id,),
            )
            yield from ((int(face_id), bytes(png)) for face_id, png in rows)

    def replace_embeddings(self, gallery: str, embeddings: Mapping[int, np.ndarray], model: ModelId) -> None:
        vectors = {int(i): base.check_embedding(v, model, f"face {i}") for i, v in embeddings.items()}
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            stored = {r[0] for r in db.execute("SELECT id FROM faces WHERE gallery_id = ?", (gallery_id,))}
            base.check_replacement(self.location, gallery, stored, vectors.keys())
            model_id = self._model_id(db, model)
            db.executemany(
                "UPDATE faces SET embedding = ?, model_id = ? WHERE id = ?",
                ((_blob(v), model_id, i) for i, v in vectors.items()),
            )
            db.execute("UPDATE galleries SET model_id = ? WHERE id = ?", (model_id, gallery_id))
            self._touch(db, gallery_id, rewrite=True)

    # ------------------------------------------------------------------------------------------------ API keys
    _KEY_COLUMNS = "k.id, k.role, g.name, k.label, k.created, k.last_used, k.revoked"

    def _key_row(self, db: sqlite3.Connection, key_id: int) -> ApiKey:
        row = db.execute(
            f"SELECT {self._KEY_COLUMNS} FROM api_keys k LEFT JOIN galleries g ON g.id = k.gallery_id WHERE k.id = ?",
            (key_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no API key {key_id}")
        return _key(row)

    def create_key(self, role: Role, gallery: str | None = None, label: str = "") -> tuple[ApiKey, str]:
        role = base.check_role(role)
        label = base.check_label(label)
        secret, digest = base.new_secret()
        with self._transaction(write=True) as db:
            gallery_id = self._gallery_row(db, gallery)[0] if gallery is not None else None
            cursor = db.execute(
                "INSERT INTO api_keys (secret_sha256, role, gallery_id, label, created) VALUES (?, ?, ?, ?, ?)",
                (digest, role, gallery_id, label, base.utc_now()),
            )
            return self._key_row(db, int(cursor.lastrowid or 0)), secret

    def keys(self) -> list[ApiKey]:
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {self._KEY_COLUMNS} FROM api_keys k LEFT JOIN galleries g ON g.id = k.gallery_id ORDER BY k.id"
            ).fetchall()
            return [_key(r) for r in rows]

    def revoke_key(self, key_id: int) -> ApiKey:
        with self._transaction(write=True) as db:
            self._key_row(db, key_id)
            db.execute("UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (base.utc_now(), key_id))
            return self._key_row(db, key_id)

    def authenticate(self, secret: str) -> ApiKey | None:
        digest = base.hash_secret(secret)
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT {self._KEY_COLUMNS} FROM api_keys k LEFT JOIN galleries g ON g.id = k.gallery_id "
                "WHERE k.secret_sha256 = ? AND k.revoked IS NULL",
                (digest,),
            ).fetchone()
        if row is None:
            return None
        key = _key(row)
        now = base.utc_now()
        if key.last_used is None or base.seconds_between(key.last_used, now) >= KEY_USE_RESOLUTION_S:
            with self._transaction(write=True) as db:
                db.execute("UPDATE api_keys SET last_used = ? WHERE id = ?", (now, key.id))
            key = ApiKey(key.id, key.role, key.gallery, key.label, key.created, now, key.revoked)
        return key


__all__ = ["SCHEMA_VERSION", "SQLiteStore"]
