"""The attacks of issue 21 against a real service process: each gets its error, the work it asks for is bounded or
stopped, and ``/healthz`` keeps answering within 100 ms meanwhile."""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers.hostile import blank_png, scan_bomb
from tests.helpers.photos import photo
from tests.helpers.service import RunningService, create_key, start_service

from .conftest import Fresh, Served

PIXEL_BUDGET_MIB = 80e6 * 3 / 2**20  # the fresh service's pixel budget (80 MP) at 3 bytes a pixel: 229 MiB


def _problem(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    return body


@dataclass
class Keys:
    service: RunningService
    reader: str
    other: str


def _start(model_file: Path, folder: Path, *options: str) -> Keys:
    db = folder / "g.sqlite"
    reader, other = create_key(db, "identify"), create_key(db, "identify")
    service = start_service(model_file, db, folder / "serve.log", *options)
    return Keys(service, str(reader["key"]), str(other["key"]))


@pytest.fixture(scope="module")
def tight(model_file, tmp_path_factory) -> Iterator[Keys]:
    """A service with a short deadline, low rate limits and no API docs."""
    options = ("--deadline", "0.3", "--rate-limit", "5", "--rate-burst", "5", "--auth-failures", "3", "--no-docs")
    keys = _start(model_file, tmp_path_factory.mktemp("tight"), *options)
    try:
        yield keys
    finally:
        keys.service.stop()


# /healthz every 20 ms from a process of its own (the test's client threads would delay a thread of this one)
_WATCH = """
import http.client, sys, time
connection = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=30)
while True:
    start = time.perf_counter()
    connection.request("GET", "/healthz")
    answer = connection.getresponse()
    answer.read()
    print(answer.status, time.perf_counter() - start, flush=True)
    time.sleep(0.02)
"""


@contextmanager
def healthz_watch(service: RunningService) -> Iterator[list[tuple[int, float]]]:
    """``/healthz`` every 20 ms while the block runs: (status, seconds) of each answer, filled in at its end."""
    url = urlsplit(service.url)
    answers: list[tuple[int, float]] = []
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCH, str(url.hostname), str(url.port)], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.5)  # it starts
        yield answers
    finally:
        watcher.terminate()
        output, _ = watcher.communicate(timeout=30)
        answers += [(int(status), float(seconds)) for status, seconds in (line.split() for line in output.splitlines())]


def _early_answer(service: RunningService, path: str, declared: int, sent: int, headers: str = "") -> bytes:
    """Declare a body of ``declared`` bytes, send only ``sent`` of them, and read what the server answers (a server
    that waits for the whole body answers nothing)."""
    url = urlsplit(service.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n{headers}\r\n"
        )
        conn.sendall(head.encode() + b"[" + b"{}," * (sent // 3))
        conn.settimeout(5)
        answer = b""
        try:
            while chunk := conn.recv(65536):  # until the server closes the connection
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


def test_attacks_get_their_errors_while_healthz_answers(fresh: Fresh) -> None:
    """Issue 21's "done when": a scan-bomb JPEG, a 30 MB body without a key and ten 40-megapixel images, each
    answered with its error (or, for the images, with their result), memory within the pixel budget, and
    ``/healthz`` within 100 ms all along (on a machine whose load lets the idle service answer within 50 ms)."""
    service = fresh.service
    pngs = [blank_png(8000, 5000) for _ in range(10)]  # 40 MP each, 39 kB on the wire
    with healthz_watch(service) as quiet:
        time.sleep(3)
    # 100 ms on a machine of our own; on a machine so loaded that the idle service misses that, 3x its own time
    bound = max(seconds for _, seconds in quiet)
    bound = 0.1 if bound < 0.05 else 3 * bound
    with healthz_watch(service) as health:
        # 1. 3,000 scans over the whole image: refused from the file's structure, before any decoding
        with service.client(fresh.reader) as http:
            start = time.perf_counter()
            body = _problem(http.post("/v1/detect", files={"image": scan_bomb(1000, 1000, 3000)}), 422, "INVALID_IMAGE")
            assert "scans" in body["detail"] and time.perf_counter() - start < 5
        # 2. 30 MB of JSON without a key: 401 before the body is read (only its first MB is ever sent)
        before = service.memory_mib()
        answer = _early_answer(service, "/v1/galleries", 30 * 2**20, 2**20)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b'"code":"UNAUTHORIZED"' in answer
        assert service.memory_mib() - before < 50
        # 3. ten 40-megapixel images at once: decoded within the pixel budget (one at a time here: a 40 MP image's
        # decoding holds two copies, OpenCV's and this process's), each answered
        peak = [service.memory_mib()]
        baseline = peak[0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], service.memory_mib())
                time.sleep(0.01)

        def detect(data: bytes) -> httpx.Response:
            with service.client(fresh.reader) as http:
                return http.post("/v1/detect", files={"image": data})

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(10) as pool:
                answers = list(pool.map(detect, pngs))
        finally:
            done.set()
            sampler.join()
    for r in answers:
        if r.status_code == 200:
            assert r.json()["image"] == {"width": 8000, "height": 5000} and r.json()["faces"] == []
        else:
            _problem(r, 503, r.json()["code"])
            assert r.json()["code"] in ("OVERLOADED", "DEADLINE_EXCEEDED")
    grown = peak[0] - baseline
    assert grown < PIXEL_BUDGET_MIB + 100, f"memory grew by {grown:.0f} MiB"
    assert health and all(status == 200 for status, _ in health)
    slowest = max(seconds for _, seconds in health)
    assert slowest < bound, (
        f"/healthz took {slowest * 1000:.0f} ms (of {len(health)} checks; bound {bound * 1000:.0f} ms)"
    )
    with service.client(fresh.reader) as http:
        assert http.post("/v1/detect", files={"image": photo("img1.jpg").read_bytes()}).json()["faces"]


def test_a_key_is_checked_before_the_body_is_read(served: Served) -> None:
    """No key, or a malformed Authorization header, on any /v1 route: 401 while the body is still being sent."""
    for path, headers in (
        ("/v1/detect", ""),
        ("/v1/galleries", "Authorization: Bearer\r\n"),
        ("/v1/galleries/default/identify", "Authorization: Bearer two words\r\n"),
        ("/v1/galleries", "Authorization: Basic dXNlcjpwYXNz\r\n"),
    ):
        answer = _early_answer(served.service, path, 30 * 2**20, 64 * 1024, headers)
        assert answer.startswith(b"HTTP/1.1 401"), (path, answer[:200])
        assert b"www-authenticate: bearer" in answer.lower()


def test_json_bodies_are_bounded_to_kilobytes(served: Served) -> None:
    """Routes without images take 256 KiB of JSON: more is 413 (streamed without a length too, not 400); the
    largest legitimate body (a subject with 64 kB of metadata) fits."""
    with served.service.client(served.admin) as http:
        big = b"[" + b"{}," * 100_000 + b"{}]"  # 300 kB
        _problem(
            http.post("/v1/galleries", content=big, headers={"content-type": "application/json"}),
            413,
            "PAYLOAD_TOO_LARGE",
        )

        def chunks() -> Iterator[bytes]:  # 300 kB
            for _ in range(6):
                yield b" " * 50_000

        r = http.post("/v1/galleries", content=chunks(), headers={"content-type": "application/json"})
        _problem(r, 413, "PAYLOAD_TOO_LARGE")
        http.post("/v1/galleries", json={"name": "bounded"})
        r = http.post("/v1/galleries/bounded/subjects", json={"name": "a", "metadata": {"notes": "x" * 65_000}})
        assert r.status_code == 201, r.text


def test_host_allow_list_and_no_store(served: Served) -> None:
    """A page of another origin that rebinds its name to 127.0.0.1 (DNS rebinding) reaches nothing but /healthz;
    API answers are not to be cached."""
    with httpx.Client(base_url=served.service.url) as http:
        evil = {"Host": "attacker.example"}
        for path in ("/", "/docs", "/openapi.json", "/readyz", "/static/app.js", "/v1/info"):
            _problem(http.get(path, headers=evil), 421, "UNKNOWN_HOST")
        assert http.get("/healthz", headers=evil).status_code == 200
        assert http.get("/", headers={"Host": "localhost"}).status_code == 200
        assert http.get("/readyz").headers["cache-control"] == "no-store"
        assert (
            http.get("/v1/info", headers={"Authorization": f"Bearer {served.reader}"}).headers["cache-control"]
            == "no-store"
        )
        assert http.get("/v1/info").headers["cache-control"] == "no-store"  # the guard's own 401
        assert "no-store" not in http.get("/static/app.js").headers.get("cache-control", "")


def test_deadline_stops_the_work(tight: Keys) -> None:
    """An image whose decoding outlasts the deadline: 503 DEADLINE_EXCEEDED soon after it, its worker process
    killed (the CPU work stops) and replaced, and the service goes on."""
    service = tight.service
    workers = set(service.family()[1:])
    start = time.perf_counter()
    with service.client(tight.reader) as http:
        r = http.post("/v1/detect", files={"image": blank_png(8000, 5000)})
    _problem(r, 503, "DEADLINE_EXCEEDED")
    assert time.perf_counter() - start < 5
    time.sleep(0.5)  # the replacement worker starts
    assert len(workers - set(service.family()[1:])) == 1  # one worker ended
    cpu = service.cpu_seconds()
    time.sleep(1.0)
    assert service.cpu_seconds() - cpu < 0.3  # nothing goes on decoding
    with service.client(tight.other) as http:
        tiny = blank_png(64, 64)
        assert http.post("/v1/detect", files={"image": tiny}).json()["faces"] == []


def test_requests_per_key_are_rate_limited(tight: Keys) -> None:
    with tight.service.client(tight.reader) as http:
        start = time.perf_counter()
        answers = [http.get("/v1/info") for _ in range(15)]
        elapsed = time.perf_counter() - start
    passed = sum(r.status_code == 200 for r in answers)
    assert 5 <= passed <= 5 + 5 * elapsed + 1  # the burst, then 5 a second
    limited = [r for r in answers if r.status_code == 429]
    assert limited
    _problem(limited[0], 429, "RATE_LIMITED")
    assert int(limited[0].headers["retry-after"]) >= 1
    with tight.service.client(tight.other) as http:
        assert http.get("/v1/info").status_code == 200  # another key is not slowed down


def test_failed_authentications_are_rate_limited(tight: Keys) -> None:
    """Three failures from one address (here 127.0.0.2) in a minute: then 429, even with a good key, while other
    addresses go on."""
    url = tight.service.url

    def client(address: str, key: str) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=url, transport=transport, headers={"Authorization": f"Bearer {key}"})

    with client("127.0.0.2", "gfn_guessed") as http:
        for _ in range(3):
            _problem(http.get("/v1/info"), 401, "UNAUTHORIZED")
        r = http.get("/v1/info")
        _problem(r, 429, "RATE_LIMITED")
        assert int(r.headers["retry-after"]) >= 1
    with client("127.0.0.2", tight.other) as http:
        _problem(http.get("/v1/info"), 429, "RATE_LIMITED")
    with client("127.0.0.3", tight.other) as http:
        assert http.get("/v1/info").status_code == 200


def test_docs_can_be_turned_off(tight: Keys) -> None:
    with httpx.Client(base_url=tight.service.url) as http:
        for path in ("/docs", "/openapi.json"):
            _problem(http.get(path), 404, "NOT_FOUND")
        assert http.get("/").status_code == 200
