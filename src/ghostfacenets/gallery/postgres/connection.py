"""What every part of :class:`~.store.PostgresStore` shares: its settings, the connection pool and its transactions,
what the store knows of the database's health, and the lookup of a gallery's row.

The database going away: a connection that breaks in use, or a connection attempt of the pool that fails, marks the
database down. While it is down, transactions fail at once with :class:`~..base.UnavailableError` (the service's 503
``UNAVAILABLE`` with ``Retry-After``) instead of waiting for a pool connection; at most one caller every
:data:`PROBE_INTERVAL_S` tries a connection of its own instead, and when that succeeds the pool is replaced by a
fresh one (the old one's connections are dead, its reconnection attempts in back-off) and the store is up again.
Pooled connections are checked as they are handed out, so one left dead by a restart nobody noticed is replaced
rather than failing a request.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import base
from ..base import ConflictError, GalleryError, ModelId, NotFoundError, UnavailableError
from ..stores import scrub
from .options import CONNECT_TIMEOUT_S, POOL_TIMEOUT_S
from .rows import to_model

PROBE_INTERVAL_S = 0.5  # while the database is down, how often a caller tries a connection of its own
PROBE_TIMEOUT_S = 2  # libpq's shortest connect_timeout
WAIT_SLICE_S = 0.5  # a wait for a pooled connection looks at the database's health this often


class Health:
    """Whether the database answers, as far as the store knows: down since a monotonic time, or up (None)."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.last_probe = 0.0
        self.lock = threading.Lock()

    def mark_down(self) -> None:
        with self.lock:
            if self.down_since is None:
                self.down_since = self.last_probe = time.monotonic()

    def mark_up(self) -> None:
        with self.lock:
            self.down_since = None

    def take_probe(self) -> bool:
        """While down: True for the one caller whose turn it is to try a connection."""
        with self.lock:
            now = time.monotonic()
            if now - self.last_probe < PROBE_INTERVAL_S:
                return False
            self.last_probe = now
            return True


class Connected:
    """The state the store's parts share (set by :class:`~.store.PostgresStore`'s constructor) and the helpers
    they all use."""

    location: str
    schema: str
    options: dict[str, Any]
    vector_type: str
    hnsw: tuple[int, int]
    ef_search: int
    exact_limit: int
    _psycopg: Any
    _jsonb: Any
    _pool: Any
    _conninfo: str
    _configure: Callable[[Any], None]
    _health: Health
    _closed: bool

    def _reason(self, exc: Exception) -> str:
        """A driver error as one line, without the connection string's secrets."""
        text = str(exc).strip().splitlines()
        return scrub(text[0], self._conninfo) if text else type(exc).__name__

    def _new_pool(self) -> Any:
        """A connection pool (not open yet) whose connection attempts tell :attr:`_health` what they find."""
        import psycopg_pool

        psycopg, health = self._psycopg, self._health
        connection_class: Any = psycopg.Connection

        class Watched(connection_class):
            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    connection = super().connect(*args, **kwargs)
                except psycopg.OperationalError:
                    health.mark_down()
                    raise
                health.mark_up()
                return connection

        return psycopg_pool.ConnectionPool(
            self._conninfo,
            connection_class=Watched,
            min_size=1,
            max_size=self.options["pool_size"],
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            configure=self._configure,
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT_S,
            open=False,
        )

    def _unavailable(self) -> UnavailableError:
        down = self._health.down_since
        since = f" for {time.monotonic() - down:.0f} s" if down is not None else ""
        return UnavailableError(f"{self.location}: the database does not answer{since}; try again shortly")

    def _live_pool(self) -> Any:
        """The pool, or :class:`UnavailableError` at once while the database is down (unless it is this caller's
        turn to try a connection, and it succeeds: then a fresh pool)."""
        if self._health.down_since is None:
            return self._pool
        if not self._health.take_probe():
            raise self._unavailable()
        try:
            self._psycopg.connect(self._conninfo, connect_timeout=PROBE_TIMEOUT_S).close()
        except self._psycopg.Error:
            raise self._unavailable() from None
        fresh = self._new_pool()
        try:
            fresh.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except Exception:
            fresh.close()
            raise self._unavailable() from None
        old, self._pool = self._pool, fresh
        self._health.mark_up()
        threading.Thread(target=old.close, name="gfn-old-pool", daemon=True).start()  # its users may still finish
        return fresh

    def _connection(self, pool: Any) -> Any:
        """A connection from ``pool``, waiting for one in slices so that a database found down meanwhile ends the
        wait at once."""
        import psycopg_pool

        deadline = time.monotonic() + POOL_TIMEOUT_S
        while True:
            try:
                return pool.getconn(timeout=max(0.01, min(WAIT_SLICE_S, deadline - time.monotonic())))
            except psycopg_pool.PoolTimeout:
                if self._health.down_since is not None:
                    raise self._unavailable() from None
                if time.monotonic() >= deadline:
                    raise UnavailableError(
                        f"{self.location}: no free database connection within {POOL_TIMEOUT_S} s (all "
                        f"{self.options['pool_size']} busy)"
                    ) from None
            except psycopg_pool.PoolClosed:
                if self._closed:
                    raise GalleryError(f"{self.location}: the gallery store is closed") from None
                raise self._unavailable() from None  # replaced meanwhile: the database went down and came back

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A pooled connection in one transaction; driver errors become one-line GalleryErrors, a lost connection
        (the database stopping, restarting or unreachable) :class:`UnavailableError`."""
        psycopg = self._psycopg
        if self._closed:
            raise GalleryError(f"{self.location}: the gallery store is closed")
        pool = self._live_pool()
        db = self._connection(pool)
        try:
            with db.transaction():
                yield db
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(f"{self.location}: {self._reason(exc)} (a concurrent write; try again)") from None
        except psycopg.Error as exc:
            if db.broken or db.closed:
                self._health.mark_down()
                raise self._unavailable() from None
            raise GalleryError(f"{self.location}: {self._reason(exc)}") from None
        finally:
            pool.putconn(db)

    def _gallery_row(self, db: Any, name: str, lock: bool = False) -> tuple[int, ModelId | None, int]:
        """(id, model, faces) of a gallery; ``lock``: held until the transaction ends (every write does this)."""
        row = db.execute(
            "SELECT g.id, m.name, m.sha256, m.dim, m.flip, g.faces FROM galleries g "
            "LEFT JOIN models m ON m.id = g.model_id WHERE g.name = %s" + (" FOR UPDATE OF g" if lock else ""),
            (base.check_gallery_name(name),),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.location}: no gallery named {name!r}")
        return row[0], to_model(row[1:5]), row[5]

    def _count(self, db: Any, gallery_id: int, subjects: int = 0, faces: int = 0, crops: int = 0) -> None:
        db.execute(
            "UPDATE galleries SET subjects = subjects + %s, faces = faces + %s, crops = crops + %s WHERE id = %s",
            (subjects, faces, crops, gallery_id),
        )
