"""Real stores for the people tests: an SQLite file, or a fresh database on the session's PostgreSQL (``pg_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ghostfacenets.gallery import GalleryStore, open_store

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "people.sqlite")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db: str) -> Iterator[GalleryStore]:
    with open_store(db) as opened:
        yield opened
