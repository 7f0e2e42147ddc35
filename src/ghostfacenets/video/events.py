"""Track events (a person appeared, was identified, left) as JSON records, and a webhook that posts them.

Each event is one JSON object; ``ghostfacenets watch --json`` prints one per line, and :class:`WebhookSender` posts
each as the body of its own request from a background thread, with retries and a bounded queue, so that a slow or
absent receiver never holds the video up nor grows memory.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..errors import GhostFaceNetsError
from .identity import Identity

log = logging.getLogger("ghostfacenets.video")
EVENT_KINDS = ("appeared", "identified", "left")
SIGNATURE_HEADER = "X-Ghostfacenets-Signature"


@dataclass(frozen=True)
class TrackEvent:
    """Something that happened to track ``track`` at ``time`` (seconds on the video's timeline; ``wall_time``:
    Unix seconds, for a live source). ``start`` and ``end`` are the times of the first and the latest frame the
    face was seen in; ``box`` its latest box (x1, y1, x2, y2 pixels), ``quality`` its best sighting's,
    ``faces`` how many sightings were embedded; ``identity`` the decision (None without a gallery)."""

    event: str
    track: int
    time: float
    frame: int
    start: float
    end: float
    box: np.ndarray
    score: float
    quality: float
    faces: int
    identity: Identity | None = None
    source: str = ""
    wall_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "event": self.event,
            "track": self.track,
            "time": round(self.time, 3),
            "frame": self.frame,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "duration": round(self.end - self.start, 3),
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "quality": round(float(self.quality), 4),
            "faces": self.faces,
        }
        if self.identity is not None:
            record.update(self.identity.to_dict())
            record["threshold"] = round(self.identity.threshold, 6)
        if self.source:
            record["source"] = self.source
        if self.wall_time is not None:
            record["wall_time"] = datetime.fromtimestamp(self.wall_time, timezone.utc).isoformat(
                timespec="milliseconds"
            )
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


def check_webhook_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host, else a one-line error."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GhostFaceNetsError(f"a webhook is an http:// or https:// URL, got {url!r}")
    return url


@dataclass
class WebhookStats:
    """Events ``sent``, given up after retries or refused by the receiver (``failed``), ``dropped`` because the
    queue was full or the sender closed before they went, and ``retries`` made."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0


class WebhookSender:
    """Posts events to ``url`` as JSON from a background thread.

    ``queue_size``: events waiting at most; when full the oldest is dropped (and counted), so memory stays bounded
    however long the receiver is away. ``retries``: further tries of an event after a connection error, a timeout,
    429 or a 5xx answer, waiting ``backoff`` seconds doubling to 30 s; another 4xx is not retried. ``timeout``:
    seconds per request. ``secret``: signs each body with HMAC-SHA256, sent as ``X-Ghostfacenets-Signature:
    sha256=HEX``. Use as a context manager, or call :meth:`close`, which waits up to ``drain`` seconds for the
    queue to empty.
    """

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = 1000,
        retries: int = 5,
        timeout: float = 5.0,
        backoff: float = 0.5,
        secret: str | None = None,
        drain: float = 10.0,
    ) -> None:
        if queue_size < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise GhostFaceNetsError("the webhook needs queue_size >= 1, retries >= 0, timeout > 0, backoff >= 0")
        self.url = check_webhook_url(url)
        self.queue_size = queue_size
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.secret = secret.encode() if secret else None
        self.drain = drain
        self.stats = WebhookStats()
        self._queue: collections.deque[bytes] = collections.deque()
        self._ready = threading.Condition()
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ghostfacenets-webhook", daemon=True)
        self._thread.start()

    def send(self, event: TrackEvent | dict[str, Any]) -> None:
        """Queue an event (never blocks)."""
        record = event.to_dict() if isinstance(event, TrackEvent) else event
        body = json.dumps(record, separators=(",", ":")).encode()
        with self._ready:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.stats.dropped += 1
                log.warning("webhook: %d events waiting, dropped the oldest", self.queue_size)
            self._queue.append(body)
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing.is_set():
                    self._ready.wait()
                if not self._queue:
                    return
                body = self._queue.popleft()
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "ghostfacenets-watch"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        wait = self.backoff
        for attempt in range(self.retries + 1):
            if self._abandon.is_set():
                self.stats.dropped += 1
                return
            if attempt:
                self.stats.retries += 1
                if self._abandon.wait(wait):
                    self.stats.dropped += 1
                    return
                wait = min(30.0, wait * 2)
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    answer.read(65536)
                self.stats.sent += 1
                return
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code != 429 and exc.code < 500:
                    log.warning("webhook: the receiver refused an event (HTTP %d); not retried", exc.code)
                    self.stats.failed += 1
                    return
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                reason = str(getattr(exc, "reason", exc))
            log.warning("webhook: %s (try %d of %d)", reason, attempt + 1, self.retries + 1)
        self.stats.failed += 1

    def close(self) -> WebhookStats:
        """Send what is queued (up to ``drain`` seconds), then stop; events still waiting count as dropped."""
        self._closing.set()
        with self._ready:
            self._ready.notify_all()
        self._thread.join(self.drain)
        if self._thread.is_alive():
            self._abandon.set()
            with self._ready:
                self.stats.dropped += len(self._queue)
                self._queue.clear()
            self._thread.join(self.timeout + 1)
        return self.stats

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
