"""The gallery store in PostgreSQL with pgvector (:class:`PostgresStore`): shared by many workers and machines.

Tables live in their own schema (``ghostfacenets`` unless ``schema=`` says otherwise), created and migrated on first
use under an advisory lock (numbered migrations, the version in ``schema_version``; a newer schema is refused).
Embeddings are a pgvector ``vector`` column (or ``halfvec``, chosen when the schema is created) with one HNSW cosine
index per embedding size, a partial expression index (``embedding::vector(D)`` where ``dim = D``), so galleries of
models of different sizes share one table. The column's storage is PLAIN: a 512-d vector (2 KB) would otherwise be
moved out of line to TOAST, one more lookup for every face an exact search or an index build reads.

Every write is one transaction that first locks its gallery's row (``SELECT ... FOR UPDATE``): writes to one gallery
are serialised across processes and machines, writes to different galleries run in parallel, and the gallery's
counters (subjects, faces, crops) stay exact. Reads take no lock (MVCC snapshots).

Search scores each subject by its best face. Up to ``exact_limit`` faces in the gallery it is exact (every face of
the gallery scored); above, the HNSW index gives the nearest faces (``hnsw.ef_search`` = ``ef_search``, pgvector
0.8's iterative index scan so the gallery filter never starves the result) and the best subjects among them.

Options, as keyword arguments or URL query parameters (``postgresql://host/db?ef_search=200``): ``ef_search``
(default 100), ``exact_limit`` (5000), ``pool_size`` (10 connections), ``schema`` (ghostfacenets), and, when the
schema is created, ``vector_type`` (vector or halfvec), ``hnsw_m`` (16) and ``hnsw_ef_construction`` (64).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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

SCHEMA_VERSION = 1
DEFAULTS: dict[str, Any] = {
    "ef_search": 100,
    "exact_limit": 5_000,
    "pool_size": 10,
    "schema": "ghostfacenets",
    "vector_type": "vector",
    "hnsw_m": 16,
    "hnsw_ef_construction": 64,
}
VECTOR_TYPES = ("vector", "halfvec")
MAX_INDEXED_DIM = {"vector": 2000, "halfvec": 4000}  # pgvector's HNSW limits
PREPARED_DIM = 512  # GhostFaceNets' embedding size: its index is made with the schema
CONNECT_TIMEOUT_S = 10
PROGRESS_INTERVAL_S = 1.0  # how often an index build's progress is read
POOL_TIMEOUT_S = 30
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MIGRATION_LOCK = 0x67666E5F67616C  # advisory lock key: "gfn_gal"


_OWNER_ONLY = (
    "only the owner of the gallery schema (the role that created it) may drop or build its HNSW index; the "
    "application's role reads and writes rows only (docs/gallery.md)"
)
_BUILD_SETTINGS = ("maintenance_work_mem", "max_parallel_maintenance_workers")


@dataclass(frozen=True)
class IndexInfo:
    """The HNSW index of one embedding size. ``state``: ready; building (by another process); invalid (a
    concurrent build that failed: searches are exact until :meth:`PostgresStore.build_index`); missing.
    ``deferred_since``: dropped by :meth:`PostgresStore.drop_index` for a bulk load at that time (UTC)."""

    name: str
    dim: int
    state: str
    deferred_since: str | None
    faces: int  # faces of this size in the schema's galleries
    size_bytes: int
    m: int | None
    ef_construction: int | None


@dataclass(frozen=True)
class IndexBuild:
    """What :meth:`PostgresStore.build_index` did: ``built`` False when the index was ready and nothing was asked;
    the settings it ran with and pgvector's notices (e.g. that the graph outgrew ``maintenance_work_mem``)."""

    name: str
    dim: int
    built: bool
    seconds: float
    faces: int
    size_bytes: int
    concurrently: bool
    maintenance_work_mem: str
    workers: int  # max_parallel_maintenance_workers (besides the leader)
    notices: list[str]


def _index_lock(dim: int) -> tuple[int, int]:
    """The advisory lock (two int4 keys) that serialises making, dropping and building the index of ``dim``."""
    return _MIGRATION_LOCK >> 32, dim


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
}

_SUBJECT_COLUMNS = (
    "s.id, g.name, s.name, s.metadata, (SELECT count(*) FROM faces f WHERE f.subject_id = s.id), s.created, s.updated"
)
_FACE_COLUMNS = (
    "f.id, f.subject_id, f.image_sha256, f.source, f.detection, m.name, m.sha256, "
    "EXISTS (SELECT 1 FROM crops c WHERE c.face_id = f.id), f.created"
)
_KEY_COLUMNS = "k.id, k.role, g.name, k.label, k.created, k.last_used, k.revoked"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(row[0], row[1], row[2], row[3], row[4], _iso(row[5]) or "", _iso(row[6]) or "")


def _face(row: Sequence[Any]) -> StoredFace:
    return StoredFace(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), _iso(row[8]) or "")


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], _iso(row[4]) or "", _iso(row[5]), row[6] is not None)


def _model(row: Sequence[Any]) -> ModelId | None:
    return ModelId(row[0], row[1], row[2], bool(row[3])) if row[0] is not None else None


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """The connection URL without this store's own query parameters, and those parameters."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in DEFAULTS}
    rest = [(k, v) for k, v in query if k not in DEFAULTS]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(rest))), ours


def _option(name: str, value: Any) -> Any:
    """A checked option value."""
    if name in ("schema", "vector_type"):
        text = str(value)
        if name == "vector_type" and text not in VECTOR_TYPES:
            raise GalleryError(f"vector_type must be one of {', '.join(VECTOR_TYPES)}, got {text!r}")
        if name == "schema" and not _IDENTIFIER.fullmatch(text):
            raise GalleryError(f"schema {text!r} must be a lowercase SQL identifier")
        return text
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise GalleryError(f"option {name} must be an integer, got {value!r}") from None
    lowest = {"exact_limit": 0, "hnsw_m": 2, "hnsw_ef_construction": 4}.get(name, 1)
    if number < lowest:
        raise GalleryError(f"option {name} must be at least {lowest}, got {number}")
    return number


class PostgresStore:
    """Galleries in the PostgreSQL database ``url`` (``postgresql://user:password@host:port/dbname``, or
    ``?host=/socket/dir``); the schema is created or migrated on first use. See the module for the options."""

    def __init__(self, url: str, **options: Any) -> None:
        try:
            import psycopg
            import psycopg_pool
            from pgvector.psycopg import register_vector
            from psycopg.types.json import Jsonb
        except ImportError as exc:
            raise GalleryError(
                f"PostgreSQL galleries need psycopg, psycopg_pool and pgvector: pip install 'ghostfacenets[postgres]' "
                f"({exc})"
            ) from None
        self._psycopg, self._jsonb = psycopg, Jsonb
        conninfo, url_options = split_options(url)
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise GalleryError(f"unknown PostgreSQL option(s) {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
        settings = {**DEFAULTS, **url_options, **{k: v for k, v in options.items() if v is not None}}
        self.options = {name: _option(name, value) for name, value in settings.items()}
        self.location = base.redact_url(conninfo)
        self.schema = self.options["schema"]
        self.ef_search = self.options["ef_search"]
        self.exact_limit = self.options["exact_limit"]
        requested_type = "vector_type" in url_options or options.get("vector_type") is not None
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as db:
                extension_schema = self._prepare(db, requested_type)
        except psycopg.Error as exc:
            raise GalleryError(f"{self.location}: {self._reason(exc)}") from None
        search_path = f"{self.schema}, {extension_schema}" if extension_schema != self.schema else self.schema

        def configure(db: Any) -> None:
            db.execute(f"SET search_path TO {search_path}")
            db.execute("SET TIME ZONE 'UTC'")
            register_vector(db)

        self._conninfo, self._configure = conninfo, configure
        self._pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=1,
            max_size=self.options["pool_size"],
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            configure=configure,
            timeout=POOL_TIMEOUT_S,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise GalleryError(f"{self.location}: no connection within {POOL_TIMEOUT_S} s") from None

    @staticmethod
    def _reason(exc: Exception) -> str:
        """A driver error as one line."""
        text = str(exc).strip().splitlines()
        return text[0] if text else type(exc).__name__

    # ------------------------------------------------------------------------------------------------ schema
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

    def _index_name(self, dim: int) -> str:
        return f"faces_hnsw_{self.vector_type}_{dim}"

    def _index_sql(self, name: str, dim: int, concurrently: bool = False, hnsw: tuple[int, int] | None = None) -> str:
        m, ef_construction = hnsw or self.hnsw
        return (
            f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS {name} ON faces USING hnsw "
            f"((embedding::{self.vector_type}({dim})) {self.vector_type}_cosine_ops) "
            f"WITH (m = {m}, ef_construction = {ef_construction}) WHERE dim = {dim}"
        )

    @staticmethod
    def _deferred_key(name: str) -> str:
        return f"deferred:{name}"

    def _ensure_index(self, db: Any, dim: int) -> None:
        """The HNSW cosine index of embeddings of size ``dim`` (created the first time a gallery binds to it, unless
        an administrator deferred it for a bulk load: :meth:`drop_index`)."""
        if dim > MAX_INDEXED_DIM[self.vector_type]:
            return  # searched exactly: pgvector cannot index vectors this long
        name = self._index_name(dim)

        def settled() -> bool:
            exists = db.execute("SELECT to_regclass(%s)", (f"{self.schema}.{name}",)).fetchone()[0] is not None
            deferred = db.execute(
                f"SELECT 1 FROM {self.schema}.settings WHERE key = %s", (self._deferred_key(name),)
            ).fetchone()
            return exists or deferred is not None

        if settled():
            return
        db.execute("SELECT pg_advisory_xact_lock(%s, %s)", _index_lock(dim))
        if settled():  # made or deferred by another process meanwhile
            return
        try:
            with db.transaction():
                db.execute(self._index_sql(name, dim))
        except self._psycopg.errors.InsufficientPrivilege:
            raise GalleryError(
                f"{self.location}: {dim}-d embeddings need a new HNSW index ({name}), which only the owner of "
                f"schema {self.schema} may create; open the store once as the owner with a model of this size"
            ) from None

    # ------------------------------------------------------------------------------------------------ connections
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A pooled connection in one transaction; driver errors become one-line GalleryErrors."""
        import psycopg_pool

        psycopg = self._psycopg
        try:
            with self._pool.connection() as db, db.transaction():
                yield db
        except psycopg_pool.PoolTimeout:
            raise GalleryError(f"{self.location}: no free database connection within {POOL_TIMEOUT_S} s") from None
        except psycopg_pool.PoolClosed:
            raise GalleryError(f"{self.location}: the gallery store is closed") from None
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(f"{self.location}: {self._reason(exc)} (a concurrent write; try again)") from None
        except psycopg.Error as exc:
            raise GalleryError(f"{self.location}: {self._reason(exc)}") from None

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        with self._transaction() as db:
            db.execute("SELECT 1").fetchone()

    # ------------------------------------------------------------------------------------------------ helpers
    def _gallery_row(self, db: Any, name: str, lock: bool = False) -> tuple[int, ModelId | None, int]:
        """(id, model, faces) of a gallery; ``lock``: held until the transaction ends (every write does this)."""
        row = db.execute(
            "SELECT g.id, m.name, m.sha256, m.dim, m.flip, g.faces FROM galleries g "
            "LEFT JOIN models m ON m.id = g.model_id WHERE g.name = %s" + (" FOR UPDATE OF g" if lock else ""),
            (base.check_gallery_name(name),),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.location}: no gallery named {name!r}")
        return row[0], _model(row[1:5]), row[5]

    def _model_id(self, db: Any, model: ModelId) -> int:
        key = (model.name, model.sha256, model.dim, model.flip)
        db.execute("INSERT INTO models (name, sha256, dim, flip) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", key)
        row = db.execute("SELECT id FROM models WHERE name = %s AND sha256 = %s AND dim = %s AND flip = %s", key)
        return int(row.fetchone()[0])

    def _info(self, db: Any, where: str, params: tuple[Any, ...]) -> list[GalleryInfo]:
        rows = db.execute(
            "SELECT g.name, m.name, m.sha256, m.dim, m.flip, g.subjects, g.faces, g.crops, g.created "
            f"FROM galleries g LEFT JOIN models m ON m.id = g.model_id {where} ORDER BY g.name",
            params,
        ).fetchall()
        return [GalleryInfo(r[0], _model(r[1:5]), r[5], r[6], r[7], _iso(r[8]) or "") for r in rows]

    def _subject_row(self, db: Any, gallery_id: int, gallery: str, subject_id: int) -> Subject:
        row = db.execute(
            f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
            "WHERE s.id = %s AND s.gallery_id = %s",
            (subject_id, gallery_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.location}: no subject {subject_id} in gallery {gallery!r}")
        return _subject(row)

    def _count(self, db: Any, gallery_id: int, subjects: int = 0, faces: int = 0, crops: int = 0) -> None:
        db.execute(
            "UPDATE galleries SET subjects = subjects + %s, faces = faces + %s, crops = crops + %s WHERE id = %s",
            (subjects, faces, crops, gallery_id),
        )

    def _bind(self, db: Any, gallery_id: int, model: ModelId) -> int:
        """Bind the gallery to ``model`` (its index ready); returns the model's id."""
        model_id = self._model_id(db, model)
        self._ensure_index(db, model.dim)
        db.execute("UPDATE galleries SET model_id = %s WHERE id = %s", (model_id, gallery_id))
        return model_id

    # ------------------------------------------------------------------------------------------------ galleries
    def create_gallery(self, name: str, exist_ok: bool = False) -> GalleryInfo:
        base.check_gallery_name(name)
        with self._transaction() as db:
            created = db.execute(
                "INSERT INTO galleries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id", (name,)
            ).fetchone()
            if created is None and not exist_ok:
                raise ConflictError(f"{self.location}: a gallery named {name!r} exists already")
            return self._info(db, "WHERE g.name = %s", (name,))[0]

    def galleries(self) -> list[GalleryInfo]:
        with self._transaction() as db:
            return self._info(db, "", ())

    def gallery(self, name: str) -> GalleryInfo:
        with self._transaction() as db:
            self._gallery_row(db, name)
            return self._info(db, "WHERE g.name = %s", (name,))[0]

    def delete_gallery(self, name: str) -> None:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, name, lock=True)
            db.execute("DELETE FROM galleries WHERE id = %s", (gallery_id,))

    # ------------------------------------------------------------------------------------------------ subjects
    def add_subject(self, gallery: str, name: str, metadata: Mapping[str, Any] | None = None) -> Subject:
        name, text = base.check_subject_name(name), base.check_metadata(metadata)
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            subject_id = self._insert_subject(db, gallery_id, gallery, name, text)
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def _insert_subject(self, db: Any, gallery_id: int, gallery: str, name: str, metadata: str) -> int:
        row = db.execute(
            "INSERT INTO subjects (gallery_id, name, metadata) VALUES (%s, %s, %s::jsonb) "
            "ON CONFLICT (gallery_id, name) DO NOTHING RETURNING id",
            (gallery_id, name, metadata),
        ).fetchone()
        if row is None:
            raise ConflictError(f"{self.location}: gallery {gallery!r} has a subject named {name!r} already")
        self._count(db, gallery_id, subjects=1)
        return int(row[0])

    def subject(self, gallery: str, subject_id: int) -> Subject:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def find_subject(self, gallery: str, name: str) -> Subject | None:
        name = base.check_subject_name(name)
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            row = db.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.gallery_id = %s AND s.name = %s",
                (gallery_id, name),
            ).fetchone()
            return _subject(row) if row else None

    def subjects(self, gallery: str, after: int | None = None, limit: int = 100) -> list[Subject]:
        if limit < 1:
            raise GalleryError(f"limit must be at least 1, got {limit}")
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.gallery_id = %s AND s.id > %s ORDER BY s.id LIMIT %s",
                (gallery_id, after or 0, limit),
            ).fetchall()
            return [_subject(r) for r in rows]

    def update_subject(
        self, gallery: str, subject_id: int, name: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Subject:
        new_name = base.check_subject_name(name) if name is not None else None
        text = base.check_metadata(metadata) if metadata is not None else None
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            current = self._subject_row(db, gallery_id, gallery, subject_id)
            if new_name is not None and new_name != current.name:
                if db.execute(
                    "SELECT 1 FROM subjects WHERE gallery_id = %s AND name = %s", (gallery_id, new_name)
                ).fetchone():
                    raise ConflictError(
                        f"{self.location}: gallery {gallery!r} has a subject named {new_name!r} already"
                    )
                db.execute("UPDATE subjects SET name = %s WHERE id = %s", (new_name, subject_id))
            if text is not None:
                db.execute("UPDATE subjects SET metadata = %s::jsonb WHERE id = %s", (text, subject_id))
            db.execute("UPDATE subjects SET updated = now() WHERE id = %s", (subject_id,))
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def delete_subject(self, gallery: str, subject_id: int) -> int:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            self._subject_row(db, gallery_id, gallery, subject_id)
            faces, crops = db.execute(
                "SELECT count(*), count(c.face_id) FROM faces f LEFT JOIN crops c ON c.face_id = f.id "
                "WHERE f.subject_id = %s",
                (subject_id,),
            ).fetchone()
            db.execute("DELETE FROM subjects WHERE id = %s", (subject_id,))
            self._count(db, gallery_id, subjects=-1, faces=-faces, crops=-crops)
            return int(faces)

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
        with self._transaction() as db:
            if create_gallery:
                db.execute("INSERT INTO galleries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (gallery,))
            gallery_id, stored, _ = self._gallery_row(db, gallery, lock=True)
            base.check_model(gallery, stored, model)
            model_id = self._bind(db, gallery_id, model) if stored is None else self._model_id(db, model)
            images = [face.image_sha256 for e in enrolments for face in e.faces]
            owners = {
                row[0]: (row[1], row[2])
                for row in db.execute(
                    "SELECT f.image_sha256, f.subject_id, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                    "WHERE f.gallery_id = %s AND f.image_sha256 = ANY(%s)",
                    (gallery_id, images),
                )
            }
            subject_ids = self._subject_ids(db, gallery_id, [(name, metadata) for name, metadata, _ in checked])
            plans = []
            for enrolment, (name, _, vectors) in zip(enrolments, checked):
                subject_id = subject_ids[name]
                new, skipped = [], []
                for face, vector in zip(enrolment.faces, vectors):
                    owner = owners.get(face.image_sha256)
                    if owner is not None:
                        if owner[0] != subject_id:
                            raise ConflictError(
                                f"{face.source or 'image ' + face.image_sha256[:12]} is already enrolled as "
                                f"{owner[1]!r} in gallery {gallery!r}"
                            )
                        skipped.append(face.image_sha256)
                        continue
                    owners[face.image_sha256] = (subject_id, name)
                    new.append((face, vector))
                plans.append((subject_id, new, skipped))
            added_ids = self._insert_faces(db, gallery_id, model_id, model.dim, plans)
            crops = sum(face.crop is not None for _, new, _ in plans for face, _ in new)
            self._count(db, gallery_id, faces=sum(len(ids) for ids in added_ids), crops=crops)
            changed = [subject_id for (subject_id, _, _), ids in zip(plans, added_ids) if ids]
            db.execute("UPDATE subjects SET updated = now() WHERE id = ANY(%s)", (changed,))
            rows = db.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.id = ANY(%s)",
                (list({subject_id for subject_id, _, _ in plans}),),
            ).fetchall()
            subjects = {row[0]: _subject(row) for row in rows}
            faces = {face.id: face for face in self._faces_by_id(db, [i for ids in added_ids for i in ids])}
            return [
                Enrolled(subjects[subject_id], [faces[i] for i in ids], skipped)
                for (subject_id, _, skipped), ids in zip(plans, added_ids)
            ]

    def _subject_ids(self, db: Any, gallery_id: int, wanted: list[tuple[str, str]]) -> dict[str, int]:
        """Subject name -> id, the new ones (with their metadata) inserted in one batch."""
        names = [name for name, _ in wanted]
        ids = dict(
            db.execute(
                "SELECT name, id FROM subjects WHERE gallery_id = %s AND name = ANY(%s)", (gallery_id, names)
            ).fetchall()
        )
        new = {name: metadata for name, metadata in wanted if name not in ids}  # a name twice: one subject
        if new:
            rows = db.execute(
                "INSERT INTO subjects (gallery_id, name, metadata) SELECT %s, name, metadata::jsonb "
                "FROM unnest(%s::text[], %s::text[]) AS new (name, metadata) RETURNING name, id",
                (gallery_id, list(new), list(new.values())),
            ).fetchall()
            ids.update((name, int(subject_id)) for name, subject_id in rows)
            self._count(db, gallery_id, subjects=len(new))
        return ids

    def _insert_faces(
        self, db: Any, gallery_id: int, model_id: int, dim: int, plans: list[tuple[int, list[Any], list[str]]]
    ) -> list[list[int]]:
        """Insert the planned faces (and crops) with binary COPY, pgvector's recommended bulk path: their ids are
        drawn from the identity sequence first (COPY returns nothing); the new face ids per subject."""
        new = [(subject_id, face, vector) for subject_id, faces, _ in plans for face, vector in faces]
        ids: list[int] = []
        if new:
            ids = [
                int(row[0])
                for row in db.execute(
                    "SELECT nextval(pg_get_serial_sequence('faces', 'id')) FROM generate_series(1, %s)", (len(new),)
                )
            ]
            wrap = self._vector_value()
            with db.cursor() as cursor:
                with cursor.copy(
                    "COPY faces (id, gallery_id, subject_id, model_id, dim, embedding, image_sha256, source, "
                    "detection) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int8", "int8", "int8", "int4", "int4", self.vector_type, "text", "text", "jsonb"])
                    for face_id, (subject_id, face, vector) in zip(ids, new):
                        detection = self._jsonb(face.detection) if face.detection is not None else None
                        copy.write_row(
                            (face_id, gallery_id, subject_id, model_id, dim, wrap(vector), face.image_sha256,
                             face.source, detection)
                        )  # fmt: skip
                crops = [(face_id, face.crop) for face_id, (_, face, _) in zip(ids, new) if face.crop is not None]
                if crops:
                    with cursor.copy("COPY crops (face_id, png) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(["int8", "bytea"])
                        for row in crops:
                            copy.write_row(row)
        per_subject, position = [], 0
        for _, faces, _ in plans:
            per_subject.append(ids[position : position + len(faces)])
            position += len(faces)
        return per_subject

    def _vector_value(self) -> Callable[[np.ndarray], Any]:
        """How an embedding is written by binary COPY into the embedding column: pgvector's adapter dumps numpy
        arrays as ``vector``; ``halfvec`` wants its own wrapper."""
        if self.vector_type == "halfvec":
            from pgvector import HalfVector

            return HalfVector
        return lambda vector: vector

    def _faces_by_id(self, db: Any, ids: Sequence[int]) -> list[StoredFace]:
        if not ids:
            return []
        rows = db.execute(
            f"SELECT {_FACE_COLUMNS} FROM faces f JOIN models m ON m.id = f.model_id WHERE f.id = ANY(%s) "
            "ORDER BY f.id",
            (list(ids),),
        ).fetchall()
        return [_face(r) for r in rows]

    def add_faces(self, gallery: str, subject_id: int, faces: Sequence[NewFace], model: ModelId) -> Enrolled:
        subject = self.subject(gallery, subject_id)
        enrolled = self.enroll(gallery, subject.name, faces, model, create_gallery=False)
        if enrolled.subject.id != subject_id:
            raise ConflictError(f"{self.location}: subject {subject_id} changed while faces were added; try again")
        return enrolled

    def faces(self, gallery: str, subject_id: int) -> list[StoredFace]:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            self._subject_row(db, gallery_id, gallery, subject_id)
            rows = db.execute(
                f"SELECT {_FACE_COLUMNS} FROM faces f JOIN models m ON m.id = f.model_id "
                "WHERE f.subject_id = %s ORDER BY f.id",
                (subject_id,),
            ).fetchall()
            return [_face(r) for r in rows]

    def delete_face(self, gallery: str, face_id: int) -> None:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            row = db.execute(
                "DELETE FROM faces f WHERE f.id = %s AND f.gallery_id = %s "
                "RETURNING EXISTS (SELECT 1 FROM crops c WHERE c.face_id = f.id)",
                (face_id, gallery_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.location}: no face {face_id} in gallery {gallery!r}")
            self._count(db, gallery_id, faces=-1, crops=-int(row[0]))

    def enrolled_images(self, gallery: str) -> dict[str, str]:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                "SELECT f.image_sha256, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                "WHERE f.gallery_id = %s",
                (gallery_id,),
            )
            return dict(rows.fetchall())

    # ------------------------------------------------------------------------------------------------ search
    def search(self, gallery: str, queries: np.ndarray, model: ModelId, k: int = 5) -> list[list[Candidate]]:
        queries = base.check_queries(queries, model, k)
        with self._transaction() as db:
            gallery_id, stored, faces = self._gallery_row(db, gallery)
            base.check_model(gallery, stored, model)
            if stored is None or faces == 0:
                return [[] for _ in queries]
            indexed = (
                faces > self.exact_limit
                and model.dim <= MAX_INDEXED_DIM[self.vector_type]
                and self._index_row(db, self._index_name(model.dim))[1]  # not while dropped, or building
            )
            if indexed:
                self._use_index(db)
            search = self._index_search if indexed else self._exact_search
            return [search(db, gallery_id, query, model.dim, k, faces) for query in queries]

    def _use_index(self, db: Any) -> None:
        """Search through the HNSW index for the rest of the transaction. The gallery's size is known exactly, so
        the choice is made here rather than by the planner, whose statistics lag behind bulk enrolments: sorting
        (which an exact plan needs) is ruled out, and the iterative scan goes on until the gallery filter has let
        through enough faces."""
        db.execute(f"SET LOCAL hnsw.ef_search = {int(self.ef_search)}")
        db.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        db.execute("SET LOCAL enable_sort = off")

    def _exact_search(
        self, db: Any, gallery_id: int, query: np.ndarray, dim: int, k: int, faces: int
    ) -> list[Candidate]:
        rows = db.execute(
            "SELECT f.subject_id, s.name, 1 - min(f.embedding <=> %s::{t}) AS similarity FROM faces f "
            "JOIN subjects s ON s.id = f.subject_id WHERE f.gallery_id = %s "
            "GROUP BY f.subject_id, s.name ORDER BY similarity DESC, f.subject_id LIMIT %s".replace(
                "{t}", self.vector_type
            ),
            (query, gallery_id, k),
        ).fetchall()
        return [Candidate(int(r[0]), r[1], float(np.clip(r[2], -1, 1))) for r in rows]

    def _index_search(
        self, db: Any, gallery_id: int, query: np.ndarray, dim: int, k: int, faces: int
    ) -> list[Candidate]:
        """The nearest faces through the HNSW index, best subjects among them; more faces are fetched while they
        hold fewer than ``k`` subjects (a subject with many faces can fill the first ones)."""
        typed = f"{self.vector_type}({dim})"
        limit = max(4 * k, 40)
        while True:
            rows = db.execute(
                f"WITH nearest AS MATERIALIZED (SELECT subject_id, embedding::{typed} <=> %(q)s::{typed} AS distance "
                f"FROM faces WHERE gallery_id = %(g)s AND dim = {dim} ORDER BY embedding::{typed} <=> %(q)s::{typed} "
                "LIMIT %(n)s) SELECT n.subject_id, s.name, 1 - min(n.distance) AS similarity FROM nearest n "
                "JOIN subjects s ON s.id = n.subject_id GROUP BY n.subject_id, s.name "
                "ORDER BY similarity DESC, n.subject_id LIMIT %(k)s",
                {"q": query, "g": gallery_id, "n": limit, "k": k},
            ).fetchall()
            if len(rows) >= k or limit >= faces:
                return [Candidate(int(r[0]), r[1], float(np.clip(r[2], -1, 1))) for r in rows]
            limit *= 4

    def explain_search(self, gallery: str, query: np.ndarray, model: ModelId, k: int = 5) -> str:
        """The query plan of an index search (to check that the HNSW index is used)."""
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            self._use_index(db)
            typed = f"{self.vector_type}({model.dim})"
            rows = db.execute(
                f"EXPLAIN SELECT subject_id FROM faces WHERE gallery_id = %(g)s AND dim = {model.dim} "
                f"ORDER BY embedding::{typed} <=> %(q)s::{typed} LIMIT %(n)s",
                {"q": np.asarray(query, np.float32), "g": gallery_id, "n": max(4 * k, 40)},
            ).fetchall()
            return "\n".join(r[0] for r in rows)

    # ------------------------------------------------------------------------------------------------ the HNSW index
    @contextlib.contextmanager
    def _admin_connection(self) -> Iterator[Any]:
        """A connection of its own for index work (not from the pool: its session settings, advisory lock and
        statements of many minutes stay off the connections searches use); errors become one-line GalleryErrors."""
        psycopg = self._psycopg
        try:
            with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as db:
                self._configure(db)
                yield db
        except psycopg.errors.InsufficientPrivilege as exc:
            raise GalleryError(f"{self.location}: {self._reason(exc)}; {_OWNER_ONLY}") from None
        except psycopg.Error as exc:
            raise GalleryError(f"{self.location}: {self._reason(exc)}") from None

    @contextlib.contextmanager
    def _index_control(self, dim: int) -> Iterator[tuple[Any, str]]:
        """An admin connection holding the advisory lock of the ``dim``-d index, once checked that the index can
        exist and that this role owns the table; yields it and the index's name."""
        if dim > MAX_INDEXED_DIM[self.vector_type]:
            raise GalleryError(
                f"pgvector indexes {self.vector_type} of at most {MAX_INDEXED_DIM[self.vector_type]} dimensions; "
                f"{dim}-d embeddings are always searched exactly"
            )
        with self._admin_connection() as db:
            owner = db.execute("SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = 'faces'::regclass")
            if not owner.fetchone()[0]:
                raise GalleryError(f"{self.location}: dropping or building the HNSW index: {_OWNER_ONLY}")
            if not db.execute("SELECT pg_try_advisory_lock(%s, %s)", _index_lock(dim)).fetchone()[0]:
                raise GalleryError(
                    f"{self.location}: another process is dropping or building the index of {dim}-d embeddings; "
                    "try again when it has finished"
                )
            try:
                yield db, self._index_name(dim)
            finally:
                if not db.closed and not db.broken:
                    db.execute("SELECT pg_advisory_unlock(%s, %s)", _index_lock(dim))  # now, not at disconnection

    def _index_row(self, db: Any, name: str) -> tuple[int | None, bool]:
        """(oid or None, valid) of an index of the schema."""
        row = db.execute(
            "SELECT i.indexrelid::bigint, i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            (f"{self.schema}.{name}",),
        ).fetchone()
        return (int(row[0]), bool(row[1])) if row else (None, False)

    def index_status(self) -> list[IndexInfo]:
        """The HNSW index of each embedding size in use (and of 512, made with the schema), with its state."""
        with self._transaction() as db:
            dims = {
                int(r[0])
                for r in db.execute("SELECT DISTINCT m.dim FROM galleries g JOIN models m ON m.id = g.model_id")
            }
            deferred = dict(db.execute("SELECT key, value FROM settings WHERE key LIKE 'deferred:%'").fetchall())
            prefix = f"deferred:faces_hnsw_{self.vector_type}_"
            dims |= {int(key[len(prefix) :]) for key in deferred if key.startswith(prefix)}
            infos = []
            for dim in sorted(d for d in dims | {PREPARED_DIM} if d <= MAX_INDEXED_DIM[self.vector_type]):
                name = self._index_name(dim)
                oid, valid = self._index_row(db, name)
                busy = db.execute(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
                    "AND objsubid = 2 AND granted",
                    _index_lock(dim),
                ).fetchone()
                state = "ready" if valid else "building" if busy else "invalid" if oid else "missing"
                faces, size = self._index_size(db, name, dim)
                options = {}
                if oid is not None:
                    reloptions = db.execute("SELECT reloptions FROM pg_class WHERE oid = %s", (oid,)).fetchone()[0]
                    options = dict(option.split("=", 1) for option in reloptions or [])
                infos.append(
                    IndexInfo(
                        name, dim, state, deferred.get(self._deferred_key(name)), int(faces), int(size),
                        int(options["m"]) if "m" in options else None,
                        int(options["ef_construction"]) if "ef_construction" in options else None,
                    )
                )  # fmt: skip
            return infos

    def drop_index(self, dim: int) -> None:
        """Drop the HNSW index of ``dim``-d embeddings before a bulk load, and keep it dropped (enrolments do not
        recreate it) until :meth:`build_index`: rows then go in without per-row graph maintenance. The index serves
        every gallery of that size in the schema; until it is rebuilt their searches are exact (correct, slower).
        ``DROP INDEX CONCURRENTLY``: searches and enrolments go on meanwhile. Needs the owner of the schema."""
        with self._index_control(dim) as (db, name):
            db.execute(
                "INSERT INTO settings VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (self._deferred_key(name), base.utc_now()),
            )
            db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")

    def build_index(
        self,
        dim: int,
        *,
        rebuild: bool = False,
        m: int | None = None,
        ef_construction: int | None = None,
        concurrently: bool = True,
        maintenance_work_mem: str | None = None,
        workers: int | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> IndexBuild:
        """Build the HNSW index of ``dim``-d embeddings if it is missing or invalid (a failed concurrent build), or
        again when ``rebuild`` or new ``m`` / ``ef_construction`` (kept for later builds) ask for it; a ready index
        goes on serving searches while its successor is built, then is swapped for it. ``concurrently``
        (default): enrolments go on during the build; otherwise they wait until it ends (a little faster).
        ``maintenance_work_mem`` (e.g. ``"4GB"``: the graph is built fast while it fits, see pgvector's notice in the
        result) and ``workers`` (``max_parallel_maintenance_workers``) apply to this build only. ``progress(phase,
        blocks done, blocks total)`` is called about once a second. Needs the owner of the schema."""
        hnsw = (_option("hnsw_m", m or self.hnsw[0]), _option("hnsw_ef_construction", ef_construction or self.hnsw[1]))
        with self._index_control(dim) as (db, name):
            if maintenance_work_mem is not None:
                db.execute("SELECT set_config('maintenance_work_mem', %s, false)", (str(maintenance_work_mem),))
            if workers is not None:
                db.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", (str(int(workers)),))
            memory, parallel = (db.execute(f"SHOW {setting}").fetchone()[0] for setting in _BUILD_SETTINGS)
            oid, valid = self._index_row(db, name)
            if valid and not rebuild and hnsw == self.hnsw:
                db.execute("DELETE FROM settings WHERE key = %s", (self._deferred_key(name),))
                return IndexBuild(name, dim, False, 0.0, *self._index_size(db, name, dim), concurrently, memory,
                                  int(parallel), [])  # fmt: skip
            if oid is not None and not valid:
                db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_next")  # left by an interrupted rebuild
            target = f"{name}_next" if valid else name  # a ready index serves searches until its successor is ready
            notices: list[str] = []  # pgvector's, during the build

            def notice(diagnostic: Any) -> None:
                notices.append(str(diagnostic.message_primary))

            db.add_notice_handler(notice)
            started = time.perf_counter()
            with self._watch_build(db.info.backend_pid, progress):
                db.execute(self._index_sql(target, dim, concurrently, hnsw))
            seconds = time.perf_counter() - started
            db.remove_notice_handler(notice)
            if target != name:
                db.execute(f"DROP INDEX CONCURRENTLY {name}")
                db.execute(f"ALTER INDEX {target} RENAME TO {name}")
            if hnsw != self.hnsw:
                db.execute(
                    "UPDATE settings SET value = CASE key WHEN 'hnsw_m' THEN %s ELSE %s END "
                    "WHERE key IN ('hnsw_m', 'hnsw_ef_construction')",
                    (str(hnsw[0]), str(hnsw[1])),
                )
                self.hnsw = hnsw
            db.execute("DELETE FROM settings WHERE key = %s", (self._deferred_key(name),))
            faces, size = self._index_size(db, name, dim)
            return IndexBuild(name, dim, True, seconds, faces, size, concurrently, memory, int(parallel), notices)

    def _index_size(self, db: Any, name: str, dim: int) -> tuple[int, int]:
        """(faces of size ``dim`` in the schema's galleries, bytes of the index)."""
        faces = db.execute(
            "SELECT coalesce(sum(g.faces), 0) FROM galleries g JOIN models m ON m.id = g.model_id WHERE m.dim = %s",
            (dim,),
        ).fetchone()[0]
        size = db.execute("SELECT pg_relation_size(to_regclass(%s))", (f"{self.schema}.{name}",)).fetchone()[0]
        return int(faces), int(size or 0)

    @contextlib.contextmanager
    def _watch_build(self, pid: int, progress: Callable[[str, int, int], None] | None) -> Iterator[None]:
        """Report the progress of the index build of backend ``pid`` from another connection, every
        :data:`PROGRESS_INTERVAL_S`."""
        if progress is None:
            yield
            return
        stop = threading.Event()
        psycopg = self._psycopg

        def watch() -> None:
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as db:
                    while not stop.wait(PROGRESS_INTERVAL_S):
                        row = db.execute(
                            "SELECT phase, blocks_done, blocks_total FROM pg_stat_progress_create_index WHERE pid = %s",
                            (pid,),
                        ).fetchone()
                        if row is not None:
                            progress(str(row[0]), int(row[1]), int(row[2]))
            except psycopg.Error:
                return  # progress is a courtesy: the build goes on without it

        watcher = threading.Thread(target=watch, name="gfn-index-progress", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()

    # ---------------------------------------------------------------------------------------- moving, re-embedding
    def _stream(self, sql: str, params: tuple[Any, ...], convert: Callable[[Sequence[Any]], Any]) -> Iterator[Any]:
        """Rows of a large query through a server-side cursor, in one snapshot."""
        with self._transaction() as db, db.cursor(name="gfn_stream") as cursor:
            cursor.itersize = 1000
            cursor.execute(sql, params)
            for row in cursor:
                yield convert(row)

    def export_faces(self, gallery: str) -> Iterator[ExportedFace]:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)

        def convert(row: Sequence[Any]) -> ExportedFace:
            face = NewFace(
                row[2].to_numpy().astype(np.float32), row[3], row[4], row[5], bytes(row[6]) if row[6] else None
            )
            return ExportedFace(gallery, row[0], row[1], face, ModelId(row[7], row[8], row[9], bool(row[10])))

        yield from self._stream(
            "SELECT s.name, s.metadata, f.embedding::vector, f.image_sha256, f.source, f.detection, c.png, "
            "m.name, m.sha256, m.dim, m.flip FROM faces f JOIN subjects s ON s.id = f.subject_id "
            "JOIN models m ON m.id = f.model_id LEFT JOIN crops c ON c.face_id = f.id "
            "WHERE f.gallery_id = %s ORDER BY f.subject_id, f.id",
            (gallery_id,),
            convert,
        )

    def crops(self, gallery: str) -> Iterator[tuple[int, bytes]]:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
        yield from self._stream(
            "SELECT f.id, c.png FROM faces f JOIN crops c ON c.face_id = f.id WHERE f.gallery_id = %s ORDER BY f.id",
            (gallery_id,),
            lambda row: (int(row[0]), bytes(row[1])),
        )

    def replace_embeddings(self, gallery: str, embeddings: Mapping[int, np.ndarray], model: ModelId) -> None:
        vectors = {int(i): base.check_embedding(v, model, f"face {i}") for i, v in embeddings.items()}
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            stored = {r[0] for r in db.execute("SELECT id FROM faces WHERE gallery_id = %s", (gallery_id,))}
            base.check_replacement(self.location, gallery, stored, vectors.keys())
            model_id = self._bind(db, gallery_id, model)
            with db.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE faces SET embedding = %s::{self.vector_type}, dim = %s, model_id = %s WHERE id = %s",
                    [(v, model.dim, model_id, i) for i, v in vectors.items()],
                )

    # ------------------------------------------------------------------------------------------------ API keys
    def _key_row(self, db: Any, key_id: int) -> ApiKey:
        row = db.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys k LEFT JOIN galleries g ON g.id = k.gallery_id WHERE k.id = %s",
            (key_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.location}: no API key {key_id}")
        return _key(row)

    def create_key(self, role: Role, gallery: str | None = None, label: str = "") -> tuple[ApiKey, str]:
        role = base.check_role(role)
        label = base.check_label(label)
        secret, digest = base.new_secret()
        with self._transaction() as db:
            gallery_id = self._gallery_row(db, gallery)[0] if gallery is not None else None
            row = db.execute(
                "INSERT INTO api_keys (secret_sha256, role, gallery_id, label) VALUES (%s, %s, %s, %s) RETURNING id",
                (digest, role, gallery_id, label),
            ).fetchone()
            return self._key_row(db, int(row[0])), secret

    def keys(self) -> list[ApiKey]:
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys k LEFT JOIN galleries g ON g.id = k.gallery_id ORDER BY k.id"
            ).fetchall()
            return [_key(r) for r in rows]

    def revoke_key(self, key_id: int) -> ApiKey:
        with self._transaction() as db:
            self._key_row(db, key_id)
            db.execute("UPDATE api_keys SET revoked = now() WHERE id = %s AND revoked IS NULL", (key_id,))
            return self._key_row(db, key_id)

    def authenticate(self, secret: str) -> ApiKey | None:
        digest = base.hash_secret(secret)
        with self._transaction() as db:
            row = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys k LEFT JOIN galleries g ON g.id = k.gallery_id "
                "WHERE k.secret_sha256 = %s AND k.revoked IS NULL",
                (digest,),
            ).fetchone()
            if row is None:
                return None
            used = db.execute(  # at most once a minute, so that authenticating stays (nearly always) a read
                "UPDATE api_keys SET last_used = now() WHERE id = %s AND "
                f"(last_used IS NULL OR last_used < now() - interval '{KEY_USE_RESOLUTION_S} seconds') "
                "RETURNING last_used",
                (row[0],),
            ).fetchone()
            key = _key(row)
            if used is not None:
                key = ApiKey(key.id, key.role, key.gallery, key.label, key.created, _iso(used[0]), key.revoked)
            return key


__all__ = ["DEFAULTS", "SCHEMA_VERSION", "IndexBuild", "IndexInfo", "PostgresStore", "split_options"]
