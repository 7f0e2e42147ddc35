"""Opening a gallery store from ``--db``: ``postgresql://...`` (or ``postgres://``) means PostgreSQL, anything else
is an SQLite file path; and ``--db`` as messages may show it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import GalleryError, GalleryStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: str | Path) -> bool:
    """Whether ``--db`` names a PostgreSQL database (``postgresql://`` or ``postgres://``) rather than a file."""
    return isinstance(db, str) and db.lower().startswith(POSTGRES_SCHEMES)


def redact_url(db: str | Path) -> str:
    """``--db`` for messages: a URL without its password (a file path as it is)."""
    text = str(db)
    if not is_postgres_url(text):
        return text
    import urllib.parse

    parts = urllib.parse.urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def open_store(db: str | Path, *, create: bool = True, **options: Any) -> GalleryStore:
    """The store ``db`` names: a ``postgresql://`` URL (:class:`.postgres.PostgresStore`, whose ``options`` and
    URL parameters tune it) or an SQLite file path (:class:`.sqlite.SQLiteStore`, created unless ``create`` is
    False)."""
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(str(db), **options)
    if options:
        raise GalleryError(f"options {sorted(options)} apply to PostgreSQL, not to the SQLite file {db}")
    from .sqlite import SQLiteStore

    return SQLiteStore(db, create=create)
