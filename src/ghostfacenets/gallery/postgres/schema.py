"""The PostgreSQL store's schema: numbered migrations, run on first use under an advisory lock, and the settings
fixed when the schema is created."""

from __future__ import annotations

from typing import Any

from ..base import GalleryError
from .index import _MIGRATION_LOCK, PREPARED_DIM, IndexMixin

SCHEMA_VERSION = 4


# Migration n brings the schema from version n - 1 to n; {vector_type} is the embedding column's type.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE models (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    dim integer NOT NULL,
    flip boolean NOT NULL,
    UNIQUE (name, sha256, dim, flip)
);
CREATE TABLE galleries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    model_id integer REFERENCES models(id),
    subjects bigint NOT NULL DEFAULT 0,
    faces bigint NOT NULL DEFAULT 0,
    crops bigint NOT NULL DEFAULT 0,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE subjects (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gallery_id bigint NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    name text NOT NULL,
    metadata jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gallery_id, name)
);
CREATE TABLE faces (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gallery_id bigint NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    subject_id bigint NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    model_id integer NOT NULL REFERENCES models(id),
    dim integer NOT NULL,
    embedding {vector_type} NOT NULL,
    image_sha256 text NOT NULL,
    source text NOT NULL,
    detection jsonb,
    created timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gallery_id, image_sha256)
);
ALTER TABLE faces ALTER COLUMN embedding SET STORAGE PLAIN;
CREATE INDEX faces_subject ON faces (subject_id);
CREATE TABLE crops (
    face_id bigint PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    png bytea NOT NULL
);
CREATE TABLE api_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    secret_sha256 text NOT NULL UNIQUE,
    role text NOT NULL,
    gallery_id bigint REFERENCES galleries(id) ON DELETE CASCADE,
    label text NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    last_used timestamptz,
    revoked timestamptz
)
""",
    # Keys' permissions (base.PERMISSIONS; keys made before have none) and the audit trail (gallery.audit: no
    # foreign keys, its events outlive what they describe).
    2: """
ALTER TABLE api_keys ADD COLUMN permissions text NOT NULL DEFAULT '';
CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    key_id bigint,
    via text NOT NULL,
    action text NOT NULL,
    gallery text,
    subject_id bigint,
    detail jsonb NOT NULL
);
CREATE INDEX audit_gallery ON audit (gallery);
CREATE INDEX audit_at ON audit (at)
""",
    # People (gallery.people): photos, people, "not this person" and grouping settings. An unlabelled face is a row
    # of faces with its photo and no subject until its person is named (the faces of one photo share its key in
    # image_sha256, which stays unique among enrolled faces only); its grouping state lives in people_faces, a narrow
    # table of its own: placing faces updates those rows, never faces' (whose every new row version would also
    # enter the HNSW index).
    3: """
CREATE TABLE photos (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gallery_id bigint NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    key text NOT NULL,
    reference text NOT NULL,
    faces integer NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gallery_id, key)
);
CREATE TABLE people (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gallery_id bigint NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    subject_id bigint UNIQUE REFERENCES subjects(id) ON DELETE CASCADE,
    faces integer NOT NULL DEFAULT 0,
    total bytea,
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX people_gallery ON people (gallery_id, faces);
ALTER TABLE faces ALTER COLUMN subject_id DROP NOT NULL,
    ADD COLUMN photo_id bigint REFERENCES photos(id) ON DELETE CASCADE,
    DROP CONSTRAINT faces_gallery_id_image_sha256_key;
CREATE UNIQUE INDEX faces_image ON faces (gallery_id, image_sha256) WHERE photo_id IS NULL;
CREATE INDEX faces_photo ON faces (photo_id) WHERE photo_id IS NOT NULL;
CREATE TABLE people_faces (
    face_id bigint PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    gallery_id bigint NOT NULL,
    person_id bigint REFERENCES people(id) ON DELETE SET NULL,
    quality real NOT NULL,
    placed boolean NOT NULL DEFAULT false,
    pinned boolean NOT NULL DEFAULT false
);
CREATE INDEX people_faces_gallery ON people_faces (gallery_id, face_id);
CREATE INDEX people_faces_pending ON people_faces (gallery_id, face_id) WHERE NOT placed;
CREATE INDEX people_faces_person ON people_faces (person_id) WHERE person_id IS NOT NULL;
CREATE TABLE people_rejections (
    face_id bigint NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    person_id bigint NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    created timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (face_id, person_id)
);
CREATE INDEX people_rejections_person ON people_rejections (person_id);
CREATE TABLE people_settings (
    gallery_id bigint PRIMARY KEY REFERENCES galleries(id) ON DELETE CASCADE,
    settings jsonb NOT NULL
)
""",
    # Placing a face reads the pinned faces after it (an index of the few pinned rows, not a scan of the gallery)
    # and the sums of its neighbours' people: kept in the row (a sum of 512 float64 is 4 kB, which TOAST would move
    # out of line and write again, whole, at every placement).
    4: """
CREATE INDEX people_faces_pinned ON people_faces (gallery_id, face_id) WHERE pinned;
ALTER TABLE people ALTER COLUMN total SET STORAGE MAIN
""",
}


class SchemaMixin(IndexMixin):
    """Creating and migrating the schema, and reading its settings."""

    def _prepare(self, db: Any, requested_type: bool) -> str:
        """Create or migrate the schema when needed; returns the schema pgvector lives in."""
        version = self._version(db)
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.location}: gallery schema {self.schema} is at v{version}, newer than this ghostfacenets "
                f"(v{SCHEMA_VERSION}); upgrade ghostfacenets"
            )
        if version < SCHEMA_VERSION:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                self._ensure_extension(db)
                db.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
                db.execute(f"CREATE TABLE IF NOT EXISTS {self.schema}.schema_version (version integer NOT NULL)")
                version = self._version(db)  # another process may have migrated meanwhile
                db.execute(f"SET LOCAL search_path TO {self.schema}, {self._extension_schema(db)}")
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[number].format(**self.options).split(";"):
                        if statement.strip():
                            db.execute(statement)
                    if number == 1:
                        db.execute(
                            "INSERT INTO settings VALUES ('vector_type', %s), ('hnsw_m', %s), "
                            "('hnsw_ef_construction', %s)",
                            (self.options["vector_type"], self.options["hnsw_m"], self.options["hnsw_ef_construction"]),
                        )
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
                self._read_settings(db, requested_type)
                self._ensure_index(db, PREPARED_DIM)  # so that a role without DDL rights can enrol 512-d faces
        self._read_settings(db, requested_type)
        return self._extension_schema(db)

    def _read_settings(self, db: Any, requested_type: bool) -> None:
        stored = dict(db.execute(f"SELECT key, value FROM {self.schema}.settings").fetchall())
        if requested_type and stored["vector_type"] != self.options["vector_type"]:
            raise GalleryError(
                f"{self.location}: schema {self.schema} stores embeddings as {stored['vector_type']}; vector_type "
                "applies only when the schema is created (export, then import into a new schema)"
            )
        self.vector_type = stored["vector_type"]
        self.hnsw = (int(stored["hnsw_m"]), int(stored["hnsw_ef_construction"]))

    def _version(self, db: Any) -> int:
        exists = db.execute("SELECT to_regclass(%s)", (f"{self.schema}.schema_version",)).fetchone()[0]
        if exists is None:
            return 0
        row = db.execute(f"SELECT max(version) FROM {self.schema}.schema_version").fetchone()
        return int(row[0] or 0)

    def _ensure_extension(self, db: Any) -> None:
        if db.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            return
        try:
            with db.transaction():
                db.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except self._psycopg.errors.InsufficientPrivilege:
            raise GalleryError(
                f"{self.location}: the pgvector extension is not installed in this database and this role may not "
                "install it; ask an administrator to run CREATE EXTENSION vector (docs/gallery.md)"
            ) from None
        except self._psycopg.errors.FeatureNotSupported as exc:
            raise GalleryError(f"{self.location}: pgvector is not available on this server ({exc})") from None

    @staticmethod
    def _extension_schema(db: Any) -> str:
        row = db.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'"
        ).fetchone()
        if row is None:
            raise GalleryError("the pgvector extension is not installed in this database")
        return str(row[0])
