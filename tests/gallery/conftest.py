"""Real databases for the gallery tests: an SQLite file per test, or a fresh database on the session's PostgreSQL
(``pg_url``, tests/conftest.py). No mock database anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ghostfacenets.gallery import GalleryStore, open_store

BACKENDS = ("sqlite", "postgres")


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
