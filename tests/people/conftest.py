"""Real stores for the people tests: an SQLite file, or a fresh database on the session's PostgreSQL (``pg_url``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ghostfacenets.gallery import GalleryStore, open_store

# postgres-hnsw: every gallery above exact_limit, so that grouping reads through the HNSW index (one statement a
# batch) as large galleries do; postgres: exact neighbours from every embedding, as small galleries do.
BACKENDS = ("sqlite", "postgres", "postgres-hnsw")


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "people.sqlite")
    url = str(request.getfixturevalue("pg_url"))
    return url if request.param == "postgres" else f"{url}{'&' if '?' in url else '?'}exact_limit=0"


@pytest.fixture
def store(db: str) -> Iterator[GalleryStore]:
    with open_store(db) as opened:
        yield opened
