"""The SQLite gallery file's schema and its migrations (``PRAGMA user_version``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .. import base
from ..base import GalleryError, ModelId

SCHEMA_VERSION = 3

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


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file at ``path`` (open as ``db``) to :data:`SCHEMA_VERSION`, in one transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise GalleryError(
            f"{path}: gallery schema v{version} is newer than this ghostfacenets (v{SCHEMA_VERSION}); "
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
                raise GalleryError(f"{path}: an SQLite file of something else, not a ghostfacenets gallery")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
        elif version == 1:
            _migrate_v1(db, path)
        elif version == 2:
            for statement in _MIGRATE_V2.split(";"):
                db.execute(statement)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _migrate_v1(db: sqlite3.Connection, path: Path) -> None:
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
        raise GalleryError(f"{path}: a v1 gallery with embeddings but no model record; the file is damaged")
    for statement in filter(str.strip, _MIGRATE_V1.split(";")):
        db.execute(statement, {"now": base.utc_now()} if ":now" in statement else {})
