"""The SQLite gallery file's schema and its migrations (``PRAGMA user_version``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .. import base
from ..base import GalleryError, ModelId

SCHEMA_VERSION = 5

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

# v3 -> v4. Keys' permissions (base.PERMISSIONS; keys made before have none) and the audit trail (gallery.audit:
# no foreign keys, its events outlive what they describe).
_MIGRATE_V3 = """
ALTER TABLE api_keys ADD COLUMN permissions TEXT NOT NULL DEFAULT '';
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    key_id INTEGER,
    via TEXT NOT NULL,
    action TEXT NOT NULL,
    gallery TEXT,
    subject_id INTEGER,
    detail TEXT NOT NULL
);
CREATE INDEX audit_gallery ON audit(gallery);
CREATE INDEX audit_at ON audit(at)
"""

# The people step (unlabelled faces grouped into people: gallery.people). faces is rebuilt, as SQLite cannot drop
# a column's NOT NULL or a table's UNIQUE constraint in place: an unlabelled face has no subject until its person is
# named, and the faces of one photo share its key in image_sha256, which stays unique among enrolled faces only.
# Ids are kept, and the AUTOINCREMENT counter too (ids are never reused). The rebuild runs with foreign keys off
# (migrate() turns them off around its transaction), so that dropping the old table deletes no crop.
_MIGRATE_PEOPLE = """
CREATE TABLE photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    reference TEXT NOT NULL,
    faces INTEGER NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (gallery_id, key)
);
CREATE TABLE people (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    subject_id INTEGER UNIQUE REFERENCES subjects(id) ON DELETE CASCADE,
    faces INTEGER NOT NULL DEFAULT 0,
    total BLOB,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE INDEX people_gallery ON people(gallery_id, faces);
CREATE TABLE faces_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    subject_id INTEGER REFERENCES subjects(id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES models(id),
    embedding BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    detection TEXT,
    created TEXT NOT NULL,
    photo_id INTEGER REFERENCES photos(id) ON DELETE CASCADE,
    person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
    quality REAL,
    placed INTEGER NOT NULL DEFAULT 1,
    pinned INTEGER NOT NULL DEFAULT 0
);
INSERT INTO faces_new (id, gallery_id, subject_id, model_id, embedding, image_sha256, source, detection, created)
    SELECT id, gallery_id, subject_id, model_id, embedding, image_sha256, source, detection, created FROM faces;
DROP TABLE faces;
ALTER TABLE faces_new RENAME TO faces;
CREATE UNIQUE INDEX faces_image ON faces(gallery_id, image_sha256) WHERE photo_id IS NULL;
CREATE INDEX faces_subject ON faces(subject_id);
CREATE INDEX faces_gallery ON faces(gallery_id);
CREATE INDEX faces_person ON faces(person_id) WHERE person_id IS NOT NULL;
CREATE INDEX faces_photo ON faces(photo_id) WHERE photo_id IS NOT NULL;
CREATE INDEX faces_pending ON faces(gallery_id, id) WHERE placed = 0;
CREATE TABLE people_rejections (
    face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    created TEXT NOT NULL,
    PRIMARY KEY (face_id, person_id)
);
CREATE INDEX people_rejections_person ON people_rejections(person_id);
CREATE TABLE people_settings (
    gallery_id INTEGER PRIMARY KEY REFERENCES galleries(id) ON DELETE CASCADE,
    settings TEXT NOT NULL
)
"""

# Version n -> n + 1. A new file is made at v3 (_SCHEMA), a v1 file converted to v3, then both go on from there.
_STEPS = {2: _MIGRATE_V2, 3: _MIGRATE_V3, 4: _MIGRATE_PEOPLE}
_BASE_VERSION = 3  # what _SCHEMA creates


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
    db.execute("PRAGMA foreign_keys = OFF")  # for the rebuild of faces (no effect inside a transaction)
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated meanwhile
        if version == 0:
            if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                raise GalleryError(f"{path}: an SQLite file of something else, not a ghostfacenets gallery")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            version = _BASE_VERSION
        elif version == 1:
            _migrate_v1(db, path)
            version = _BASE_VERSION
        for step in range(version, SCHEMA_VERSION):
            counter = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'faces'").fetchone()
            for statement in filter(str.strip, _STEPS[step].split(";")):
                db.execute(statement)
            if counter is not None:  # a rebuilt faces table keeps its AUTOINCREMENT counter
                db.execute("DELETE FROM sqlite_sequence WHERE name = 'faces' AND seq < ?", counter)
                db.execute(
                    "INSERT INTO sqlite_sequence (name, seq) SELECT 'faces', ? "
                    "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'faces')",
                    counter,
                )
        if db.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise GalleryError(f"{path}: the gallery file's references do not hold; the file is damaged")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.execute("PRAGMA foreign_keys = ON")


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
