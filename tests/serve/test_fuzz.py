"""Bounded fuzzing of the service over HTTP (hypothesis, a fixed number of examples): every image decoder path
(JPEG baseline and progressive, PNG, WebP, BMP; as multipart files, base64 JSON and data URLs) with mutated files,
and the request parsers with random bodies, content types and headers. Every answer must be a success or a
problem+json error with a known code (never a 500, never a crash), within the deadline."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Served

DEADLINE_S = 10.0  # the service's default deadline
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _seeds() -> dict[str, bytes]:
    """Small valid files of every accepted format and JPEG flavour (noise and a gradient, so that every coding
    path has work to do)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 96, dtype=np.float32)
    pixels = (np.add.outer(ramp[:64] / 2, ramp / 2)[..., None] + rng.normal(0, 20, (64, 96, 3))).clip(0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    out = {}
    for name, fmt, options in (
        ("jpeg", "JPEG", {"quality": 80}),
        ("progressive", "JPEG", {"quality": 80, "progressive": True}),
        ("png", "PNG", {}),
        ("webp", "WEBP", {"quality": 80}),
        ("bmp", "BMP", {}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        out[name] = buffer.getvalue()
    return out


SEEDS = _seeds()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "cut", "truncate", "insert", "repeat"]))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        else:
            data[pos:pos] = bytes(data[pos : pos + draw(st.integers(1, 256))]) * draw(st.integers(1, 16))
    return bytes(data)


def _check(r: httpx.Response, elapsed: float) -> None:
    from ghostfacenets.serve.problems import CODES

    assert elapsed < DEADLINE_S + 5, f"{elapsed:.1f} s"
    if r.status_code < 400:
        return
    assert r.status_code != 500, r.text
    assert r.headers["content-type"] == "application/problem+json", r.text[:300]
    body = r.json()
    assert body["code"] in CODES and body["status"] == r.status_code and body["detail"], body
    assert "Traceback" not in r.text


@FUZZ
@given(image=mutated_images(), transport=st.sampled_from(["multipart", "base64", "data-url"]))
def test_image_decoders(served: Served, image: bytes, transport: str) -> None:
    with served.service.client(served.reader) as http:
        start = time.perf_counter()
        if transport == "multipart":
            r = http.post("/v1/detect", files={"image": image})
        else:
            text = base64.b64encode(image).decode()
            r = http.post("/v1/detect", json={"image": text if transport == "base64" else f"data:;base64,{text}"})
        _check(r, time.perf_counter() - start)
        if r.status_code == 200:
            assert r.json()["image"]["width"] >= 1
    assert served.service.alive()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b0undary", "x", "-" * 70, "a b"]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["image", "image_a", "image_b", "other", "", 'q"uote']))
        filename = draw(st.sampled_from(["", '; filename="a.jpg"', '; filename="../../etc/passwd"', "; filename*=x"]))
        payload = draw(st.binary(max_size=200) | st.sampled_from(list(SEEDS.values())))
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode() + payload
        )
    tail = draw(st.sampled_from([f"\r\n--{boundary}--\r\n".encode(), b"", b"\r\n--", draw(st.binary(max_size=40))]))
    return b"\r\n".join(parts) + tail, f"multipart/form-data; boundary={boundary}"


ROUTES = [
    ("POST", "/v1/detect"),
    ("POST", "/v1/embed"),
    ("POST", "/v1/verify"),
    ("POST", "/v1/galleries"),
    ("POST", "/v1/galleries/fuzz/subjects"),
    ("PATCH", "/v1/galleries/fuzz/subjects/1"),
    ("POST", "/v1/galleries/fuzz/subjects/1/faces"),
    ("POST", "/v1/galleries/fuzz/identify"),
    ("GET", "/v1/galleries/fuzz/subjects"),
]


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    body=st.one_of(
        json_values.map(lambda v: (json.dumps(v).encode(), "application/json")),
        multipart_bodies(),
        st.tuples(st.binary(max_size=300), st.sampled_from(["application/json", "text/plain", "", "image/jpeg"])),
    ),
    authorization=st.sampled_from(
        ["good", "none", "Bearer", "Bearer a b", "Basic x", "bearer  gfn_x", "Bearer gfn\tx"]
    ),
    query=st.dictionaries(
        st.sampled_from(["max_faces", "top_k", "threshold", "limit", "cursor", "on_multiple"]),
        st.text(max_size=8),
        max_size=3,
    ),
)
def test_request_parsers(
    served: Served, route: tuple[str, str], body: tuple[bytes, str], authorization: str, query: dict[str, str]
) -> None:
    method, path = route
    content, content_type = body
    headers = {"content-type": content_type} if content_type else {}
    if authorization == "good":
        headers["authorization"] = f"Bearer {served.admin}"
    elif authorization != "none":
        headers["authorization"] = authorization
    with httpx.Client(base_url=served.service.url, timeout=60) as http:
        start = time.perf_counter()
        r = http.request(method, path, content=content, headers=headers, params=query)
        _check(r, time.perf_counter() - start)
    assert served.service.alive()


@pytest.fixture(scope="module", autouse=True)
def _fuzz_gallery(served: Served) -> None:
    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "fuzz"})
        http.post("/v1/galleries/fuzz/subjects", json={"name": "someone"})
