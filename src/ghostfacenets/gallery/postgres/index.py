"""The PostgreSQL store's HNSW indexes: one per embedding size, made when a gallery first binds to that size,
dropped for a bulk load and built again (concurrently, with progress), and their state."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import base
from ..base import GalleryError
from .connection import Connected
from .options import CONNECT_TIMEOUT_S, check_option

MAX_INDEXED_DIM = {"vector": 2000, "halfvec": 4000}  # pgvector's HNSW limits
PREPARED_DIM = 512  # GhostFaceNets' embedding size: its index is made with the schema
PROGRESS_INTERVAL_S = 1.0  # how often an index build's progress is read
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


class IndexMixin(Connected):
    """Making, dropping, building and describing the HNSW indexes."""

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
        hnsw = (
            check_option("hnsw_m", m or self.hnsw[0]),
            check_option("hnsw_ef_construction", ef_construction or self.hnsw[1]),
        )
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
