"""Connections to the SQLite gallery file: one per thread, transactions, snapshots for long reads."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from .. import base
from ..base import GalleryError, ModelId, NotFoundError

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction before "database is locked"
ERASE_WAIT_S = 2.0  # how long emptying the WAL after a deletion waits for readers (else: after the next write)


class Connected:
    """The file, its connections and the lookups every part of :class:`~.store.SQLiteStore` uses."""

    path: Path
    location: str
    _local: threading.local
    _connections: list[sqlite3.Connection]
    _lock: threading.Lock  # guards the connection list and the matrix cache
    _closed: bool
    _erasure_pending: bool  # a deletion's old pages may still be in the WAL

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

    @contextlib.contextmanager
    def _transaction(self, write: bool, erase: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction on this thread's connection (IMMEDIATE for writes: the write lock is taken up front, so
        what is read inside stays true until the commit); SQLite failures become one-line GalleryErrors. ``erase``:
        the transaction deletes or overwrites personal data, which must then leave the WAL too (:meth:`_empty_wal`)."""
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
        if write and (erase or self._erasure_pending):
            self._empty_wal(db)

    def _empty_wal(self, db: sqlite3.Connection) -> None:
        """Copy the WAL into the database file and truncate it to nothing. With ``secure_delete`` a deletion zeroes
        the rows in the pages it writes, but the WAL still holds older images of those pages, with what was
        deleted in them, until a checkpoint; so after a deletion the WAL is emptied at once. Readers of an older
        snapshot (another process's long export) can hold it up: then it is done after a later write."""
        db.execute(f"PRAGMA busy_timeout = {int(ERASE_WAIT_S * 1000)}")
        try:
            busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error:
            busy = 1
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._erasure_pending = bool(busy)

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
