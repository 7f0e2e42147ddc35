"""Liveness in the service over real HTTP: per-request ``liveness=true``, SPOOF_SUSPECTED (problem+json) and
nothing enrolled, ``POST /v1/liveness``, and a service that checks every face (``serve --liveness``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.liveness import SAMPLES
from tests.helpers.photos import photo
from tests.helpers.service import RunningService, create_key, start_service

from .conftest import Served

LIVE, PRINT, REPLAY = SAMPLES / "image_T1.jpg", SAMPLES / "image_F1.jpg", SAMPLES / "image_F2.jpg"
SLOW = 900.0  # the first request asking for liveness loads the model (ExecuTorch lowers it once)


def _files(field: str, *paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def _assert_spoof(response, field: str) -> None:
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "SPOOF_SUSPECTED" and problem["type"] == "urn:ghostfacenets:problem:spoof-suspected"
    assert problem["detail"].startswith(f"{field}: the face does not look live (liveness 0.")


def test_liveness_route_and_verify(served: Served) -> None:
    with served.service.client(served.reader, timeout=SLOW) as http:
        checked = http.post("/v1/liveness", files=_files("image", LIVE))
        assert checked.status_code == 200, checked.text
        body = checked.json()
        assert body["faces_in_image"] == 1 and body["threshold"]["value"] == 0.915
        assert body["faces"][0]["liveness"]["is_live"] and body["faces"][0]["liveness"]["score"] > 0.99
        attack = http.post("/v1/liveness", files=_files("image", PRINT)).json()
        assert not attack["faces"][0]["liveness"]["is_live"]  # an answer here, not an error
        pair = _files("image_a", LIVE) + _files("image_b", photo("img1.jpg"))
        plain = http.post("/v1/verify", files=pair).json()
        assert "liveness" not in plain["face_a"]
        verified = http.post("/v1/verify", params={"liveness": "true"}, files=pair).json()
        assert (
            verified["face_a"]["liveness"]["is_live"]
            and verified["face_b"]["liveness"]["threshold_source"] == "default"
        )
        spoof = http.post(
            "/v1/verify", params={"liveness": "true"}, files=_files("image_a", LIVE) + _files("image_b", REPLAY)
        )
        _assert_spoof(spoof, "image_b")


def test_a_spoof_is_never_enrolled_and_identify_refuses_it(served: Served) -> None:
    with served.service.client(served.admin, timeout=SLOW) as http:
        http.post("/v1/galleries", json={"name": "liveness"})
        subject = http.post("/v1/galleries/liveness/subjects", json={"name": "T"}).json()
        faces = f"/v1/galleries/liveness/subjects/{subject['id']}/faces"
        refused = http.post(faces, params={"liveness": "true"}, files=_files("image", LIVE, PRINT))
        _assert_spoof(refused, "image[1]")
        assert http.get(faces).json()["faces"] == []  # nothing of the request was stored
        enrolled = http.post(faces, params={"liveness": "true"}, files=_files("image", LIVE))
        assert enrolled.status_code == 201 and enrolled.json()["faces"][0]["liveness"]["is_live"]
        found = http.post("/v1/galleries/liveness/identify", params={"liveness": "true"}, files=_files("image", LIVE))
        assert found.json()["faces"][0]["liveness"]["is_live"] and found.json()["faces"][0]["match"] == subject["id"]
        spoof = http.post("/v1/galleries/liveness/identify", params={"liveness": "true"}, files=_files("image", REPLAY))
        _assert_spoof(spoof, "image")


@pytest.fixture(scope="module")
def required(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningService, str]]:
    """A service started with --liveness (fused PyTorch: no lowering to wait for)."""
    folder = tmp_path_factory.mktemp("liveness_service")
    key = str(create_key(folder / "g.sqlite", "admin")["key"])
    service = start_service(
        model_file, folder / "g.sqlite", folder / "serve.log", "--liveness", "--liveness-threshold", "0.5",
        "--backend", "fused", timeout=600,
    )  # fmt: skip
    try:
        yield service, key
    finally:
        service.stop()


def test_a_service_that_requires_liveness(required: tuple[RunningService, str]) -> None:
    service, key = required
    with service.client(key) as http:
        assert http.get("/v1/info").json()["liveness"] == {"required": True}
        pair = _files("image_a", LIVE) + _files("image_b", photo("img1.jpg"))
        verified = http.post("/v1/verify", files=pair).json()
        assert verified["face_b"]["liveness"] == {
            "score": verified["face_b"]["liveness"]["score"],
            "is_live": True,
            "threshold": 0.5,
            "threshold_source": "user",
        }
        _assert_spoof(http.post("/v1/verify", files=_files("image_a", LIVE) + _files("image_b", PRINT)), "image_b")
        off = http.post("/v1/verify", params={"liveness": "false"}, files=pair)
        assert (
            off.status_code == 422 and off.json()["code"] == "VALIDATION" and "liveness=false" in off.json()["detail"]
        )
