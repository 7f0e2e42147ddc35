"""The webhook against a real HTTP server on 127.0.0.1: delivery in order, signatures, retries, refusals, a bounded
queue when the receiver is away; and ``ghostfacenets watch`` with JSON lines and a webhook."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ghostfacenets.cli import main
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.video import WebhookSender


@dataclass
class Receiver:
    """What the server got, and how it answers: ``answers`` is a list of statuses used in turn (then 200);
    ``hold`` makes every request wait until it is set."""

    url: str
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    hold: threading.Event | None = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.hold is not None:
                state.hold.wait(30)
            status = state.answers.pop(0) if state.answers else 200
            if status == 200:
                state.bodies.append(body)
                state.headers.append(dict(self.headers))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/events"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def events(count: int) -> list[dict[str, object]]:
    return [{"event": "appeared", "track": i, "time": i / 10} for i in range(count)]


def test_delivered_in_order_and_signed(receiver: Receiver) -> None:
    with WebhookSender(receiver.url, secret="s3cret") as sender:
        for event in events(5):
            sender.send(event)
    assert sender.stats.sent == 5 and sender.stats.failed == sender.stats.dropped == 0
    assert [json.loads(b)["track"] for b in receiver.bodies] == [0, 1, 2, 3, 4]
    for body, headers in zip(receiver.bodies, receiver.headers):
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Ghostfacenets-Signature"] == expected
        assert headers["Content-Type"] == "application/json"


def test_server_errors_are_retried_and_refusals_are_not(receiver: Receiver) -> None:
    receiver.answers = [503, 500, 200, 400]
    with WebhookSender(receiver.url, retries=3, backoff=0.01) as sender:
        for event in events(2):
            sender.send(event)
    assert sender.stats.sent == 1 and sender.stats.retries == 2 and sender.stats.failed == 1
    assert [json.loads(b)["track"] for b in receiver.bodies] == [0]  # event 1 was refused (400): not sent again


def test_a_receiver_that_is_away_costs_a_bounded_queue(receiver: Receiver) -> None:
    receiver.hold = threading.Event()
    sender = WebhookSender(receiver.url, queue_size=3, timeout=0.5, retries=0, drain=1.0)
    for event in events(50):
        sender.send(event)
    assert len(sender._queue) <= 3 and sender.stats.dropped >= 46
    started = time.monotonic()
    stats = sender.close()
    assert time.monotonic() - started < 5  # closing waits for the drain time, not for the receiver
    assert stats.sent + stats.failed + stats.dropped == 50
    receiver.hold.set()


def test_nobody_listening(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with WebhookSender(f"http://127.0.0.1:{port}/", retries=1, backoff=0.01, timeout=1) as sender:
        sender.send(events(1)[0])
    assert sender.stats.failed == 1 and sender.stats.retries == 1
    with pytest.raises(GhostFaceNetsError, match="http:// or https://"):
        WebhookSender("file:///etc/passwd")


def test_watch_prints_json_lines_and_posts_them(
    receiver: Receiver, door_video: Path, door_gallery: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first 3 s of the door video: angelina from 0.6 s, jennifer from 1.4 s, both there at the end."""
    code = main(
        ["watch", str(door_video), "--end", "3", "--db", str(door_gallery), "--model", str(model_file)]
        + ["--device", "cpu", "--json", "--webhook", receiver.url]
    )
    assert code == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["track"]) for e in lines] == [
        ("appeared", 1),
        ("identified", 1),
        ("appeared", 2),
        ("identified", 2),
        ("left", 1),
        ("left", 2),
    ]
    assert [e["identity"] for e in lines if e["event"] == "left"] == ["angelina", "jennifer"]
    assert [json.loads(b) for b in receiver.bodies] == lines
    assert "x real time" in err


def test_watch_errors_are_one_line(tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", str(tmp_path / "missing.mp4")]) == 2
    text = tmp_path / "notes.txt"
    text.write_text("no video here")
    assert main(["watch", str(text), "--model", str(model_file), "--device", "cpu"]) == 2
    assert main(["watch", str(text), "--webhook", "ftp://somewhere"]) == 2
    assert main(["watch", str(text), "--fps", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"ghostfacenets watch: error: {tmp_path / 'missing.mp4'}: no such file",
        f"ghostfacenets watch: error: {text}: cannot open (Invalid data found when processing input)",
        "ghostfacenets watch: error: a webhook is an http:// or https:// URL, got 'ftp://somewhere'",
        "ghostfacenets watch: error: --fps must be 0 (every frame) or more, got -1.0",
    ]
