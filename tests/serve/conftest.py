"""Fixtures of the service tests: a small GhostFaceNet, a real service process on 127.0.0.1 and its API keys."""

from __future__ import annotations

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
    # Many tests share this service, check 401 answers on purpose and send requests fast (the fuzz tests): room
    # for their failed authentications and requests (the limits themselves are tested in test_attacks.py).
    limits = ("--auth-failures", "1000", "--rate-limit", "1000", "--rate-burst", "1000")
    options = ("--max-body-mb", "8", "--store-crops", "--log-level", "info", *limits)
    service = start_service(model_file, db, folder / "serve.log", *options)
    try:
        yield Served(service, db, str(admin["key"]), str(reader["key"]), str(scoped["key"]), int(admin["id"]))  # type: ignore[call-overload]
    finally:
        service.stop()


@dataclass
class Fresh:
    """A service with the default settings on a database of its own (see ``fresh``): ``admin`` and ``reader``
    (identify) keys."""

    service: RunningService
    admin: str
    reader: str


@pytest.fixture(scope="session")
def fresh(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fresh]:
    """The defaults but for a pixel budget of 80 MP: one 40 MP image's decoding at a time, whatever the cores."""
    folder = tmp_path_factory.mktemp("fresh")
    db = folder / "gallery.sqlite"
    admin, reader = create_key(db, "admin"), create_key(db, "identify")
    service = start_service(model_file, db, folder / "serve.log", "--pixel-budget-mp", "80")
    try:
        yield Fresh(service, str(admin["key"]), str(reader["key"]))
    finally:
        service.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh gallery database: an SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "gallery.sqlite")
    return str(request.getfixturevalue("pg_url"))


@dataclass
class LiteRtService:
    """A service whose browsers get LiteRT.js: ``service`` and its ``admin`` key."""

    service: RunningService
    admin: str


@pytest.fixture(scope="module")
def litert_device(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteRtService]:
    """The .safetensors model's service with float32 web weights: the browser module runs LiteRT.js with the float32
    .tflite of the service's model (the mobile extra)."""
    require_module("litert_torch", "mobile")
    folder = tmp_path_factory.mktemp("litert-on-device")
    db = folder / "gallery.sqlite"
    admin = str(create_key(db, "admin")["key"])
    service = start_service(model_file, db, folder / "serve.log", "--web-weights", "float32")
    try:
        with service.client() as http:  # the service converts the model once, on the first request (tens of seconds)
            assert http.get("/web/manifest.json", timeout=600).status_code == 200
        yield LiteRtService(service, admin)
    finally:
        service.stop()
