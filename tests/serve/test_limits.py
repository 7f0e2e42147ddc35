"""Hostile and oversized requests, each answered with its problem code while the server keeps serving."""

from __future__ import annotations

import concurrent.futures
import io
from collections.abc import Iterator

import httpx
import numpy as np

from tests.helpers.photos import photo
from tests.helpers.service import create_key, start_service

from .conftest import Served


def _still_serving(served: Served) -> None:
    with served.service.client(served.reader) as http:
        files = [("image_a", photo("img1.jpg").read_bytes()), ("image_b", photo("img2.jpg").read_bytes())]
        r = http.post("/v1/verify", files=files)
        assert r.status_code == 200 and 0.0 < r.json()["similarity"] <= 1.0
    assert served.service.alive()


def _problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code and body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    assert "Traceback" not in r.text and 'File "' not in r.text


def test_50_megapixel_png_is_refused_before_decoding(served: Served) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (10_000, 5_000)).save(buffer, "PNG")  # 50 MP, a few kB compressed
    with served.service.client(served.reader) as http:
        _problem(http.post("/v1/detect", files={"image": buffer.getvalue()}), 413, "TOO_MANY_PIXELS")
    _still_serving(served)


def test_decompression_bomb_header(served: Served) -> None:
    """A PNG header claiming 40000 x 40000 pixels (Pillow's own bomb limit is passed, too)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (40_000, 40_000)).save(buffer, "PNG")
    with served.service.client(served.reader) as http:
        _problem(http.post("/v1/detect", files={"image": buffer.getvalue()}), 413, "TOO_MANY_PIXELS")
    _still_serving(served)


def test_truncated_jpeg_text_file_and_other_formats(served: Served) -> None:
    from PIL import Image

    data = photo("img1.jpg").read_bytes()
    gif = io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, "GIF")
    with served.service.client(served.reader) as http:
        _problem(http.post("/v1/detect", files={"image": data[: len(data) // 2]}), 422, "INVALID_IMAGE")
        _problem(http.post("/v1/detect", files={"image": b"just some text\n" * 20}), 415, "INVALID_IMAGE")
        _problem(http.post("/v1/detect", files={"image": b""}), 422, "INVALID_IMAGE")
        _problem(http.post("/v1/detect", files={"image": gif.getvalue()}), 415, "INVALID_IMAGE")
        _problem(http.post("/v1/detect", json={"image": "not base64 !"}), 422, "INVALID_IMAGE")
        _problem(
            http.post("/v1/detect", content=b"raw bytes", headers={"content-type": "image/jpeg"}), 415, "VALIDATION"
        )
    _still_serving(served)


def test_a_thousand_multipart_fields(served: Served) -> None:
    with served.service.client(served.reader) as http:
        fields = {f"field{i}": "value" for i in range(1000)}
        r = http.post("/v1/detect", data=fields, files={"image": photo("img1.jpg").read_bytes()})
        _problem(r, 413, "PAYLOAD_TOO_LARGE")
        files = [("image", (f"{i}.jpg", b"x")) for i in range(1000)]
        _problem(http.post("/v1/detect", files=files), 413, "PAYLOAD_TOO_LARGE")
        _problem(http.post("/v1/detect", json={"image": ["aaaa"] * 1000}), 413, "PAYLOAD_TOO_LARGE")
    _still_serving(served)


def test_body_over_the_limit(served: Served) -> None:
    big = b"\xff" * (9 * 1024 * 1024)  # the service runs with --max-body-mb 8
    with served.service.client(served.reader) as http:
        _problem(http.post("/v1/detect", files={"image": big}), 413, "PAYLOAD_TOO_LARGE")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(9):
                yield b"\xff" * (1024 * 1024)

        r = http.post("/v1/detect", content=chunks(), headers={"content-type": "application/json"})
        _problem(r, 413, "PAYLOAD_TOO_LARGE")
    _still_serving(served)


def test_wrong_keys(served: Served) -> None:
    with httpx.Client(base_url=served.service.url) as http:
        _problem(http.post("/v1/detect", files={"image": b"x"}), 401, "UNAUTHORIZED")
        r = http.post("/v1/detect", files={"image": b"x"}, headers={"Authorization": f"Bearer {served.admin}x"})
        _problem(r, 401, "UNAUTHORIZED")
    with served.service.client(served.reader) as http:
        _problem(http.delete("/v1/galleries/default"), 403, "FORBIDDEN")
    _still_serving(served)


def test_full_queue_answers_503_at_once(model_file, tmp_path) -> None:
    """With room for two requests' image work, a burst of twelve gets some 503 OVERLOADED with Retry-After, none
    waits for long, and the service serves normally afterwards."""
    db = tmp_path / "g.sqlite"
    key = create_key(db, "identify")["key"]
    service = start_service(model_file, db, tmp_path / "serve.log", "--max-inflight", "2", "--batch-size", "1")
    try:
        files = [("image_a", photo("img1.jpg").read_bytes()), ("image_b", photo("img2.jpg").read_bytes())]

        def call(_: int) -> httpx.Response:
            with service.client(str(key)) as http:
                return http.post("/v1/verify", files=files)

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(call, range(12)))
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) == {200, 503}, statuses
        for r in answers:
            if r.status_code == 503:
                _problem(r, 503, "OVERLOADED")
                assert r.headers["retry-after"] == "1"
                assert r.elapsed.total_seconds() < 5
        with service.client(str(key)) as http:
            assert http.post("/v1/verify", files=files).status_code == 200
    finally:
        service.stop()


def test_tiny_image_has_no_face(served: Served) -> None:
    import cv2

    _, data = cv2.imencode(".png", np.full((31, 31, 3), 128, np.uint8))
    with served.service.client(served.reader) as http:
        r = http.post("/v1/verify", files={"image_a": data.tobytes(), "image_b": photo("img1.jpg").read_bytes()})
        _problem(r, 422, "NO_FACE")
