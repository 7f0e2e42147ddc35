"""Decoding with a deadline and a memory budget: worker processes that can be ended, a budget of decoded pixels
shared by the requests in flight, and JPEGs decoded no larger than the pipeline needs.

- :class:`DecoderPool`: one worker process per compute slot (:mod:`~ghostfacenets.serve.decode_worker`). A job
  that passes its deadline has its worker killed (the CPU work stops at once) and replaced; a worker that dies on
  an image (a decoder crash) is replaced too, and the service goes on.
- :class:`PixelBudget`: each decoded image holds its share of ``pixel_budget`` from before decoding until its faces
  are cut out; a request whose share is not free waits (first come, first served) within its deadline. Memory then
  stays bounded however many requests arrive, not their count.
- :class:`Frame`: where a JPEG decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling, which averages each
  block, so it shrinks without aliasing) sits in the full-size image, exactly, EXIF orientation included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np

from .decode_worker import REDUCED_SCALES, receive, send
from .problems import ApiError

log = logging.getLogger("ghostfacenets.serve")
T = TypeVar("T")
WORKER_SCRIPT = Path(__file__).with_name("decode_worker.py")
# Run the worker file as a script, not as part of the package (whose import would load FastAPI), and without the
# working folder on its import path.
_BOOT = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"
WORKER_NICE = 5  # below the event loop, so that health checks and small requests pass while images decode
_lowered = threading.local()


def in_background(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` run in a thread whose priority is first lowered to the decoding workers' (once per thread; Linux
    gives threads priorities of their own), so that the event loop keeps answering while the cores are busy."""

    def lowered(*args: Any) -> T:
        if not getattr(_lowered, "done", False):
            _lowered.done = True
            with contextlib.suppress(OSError, AttributeError):  # another system: threads share the process's
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        return function(*args)

    return lowered


class DeadlineExceeded(ApiError):
    def __init__(self, seconds: float) -> None:
        super().__init__("DEADLINE_EXCEEDED", f"the image work passed its deadline of {seconds:g} s and was stopped")


class DecoderError(Exception):
    """A decoding worker that cannot start."""


class _WorkerGone(Exception):
    """The worker process ended (killed, crashed) while it had a job."""


class _TooLate(Exception):
    """The worker did not answer in time."""


class _Worker:
    """One decoding process and its two pipes (:func:`~ghostfacenets.serve.decode_worker.send` framing), started
    and ready (its imports done) when made."""

    def __init__(self, max_pixels: int, start_timeout: float = 120.0) -> None:
        env = {
            **os.environ,
            "OPENCV_IO_MAX_IMAGE_PIXELS": str(max_pixels),  # OpenCV's own header check, before it allocates
            "MALLOC_MMAP_THRESHOLD_": str(1 << 20),  # large buffers go back to the system when freed
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "GHOSTFACENETS_WORKER_NICE": str(WORKER_NICE),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(WORKER_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._requests, self._replies = self.process.stdin.fileno(), self.process.stdout.fileno()
        self._answer = select.poll()
        self._answer.register(self._replies, select.POLLIN)
        try:
            if not self._answer.poll(int(start_timeout * 1000)) or receive(self._replies) != b"ready":
                raise EOFError
        except (OSError, EOFError):
            self.stop()
            raise DecoderError(f"a decoding worker did not start (exit {self.process.returncode})") from None

    def call(self, request: dict[str, Any], payload: bytes, deadline: float) -> tuple[dict[str, Any], list[Any]]:
        """Send a job and wait until ``deadline`` (``time.monotonic()``) for its answer to begin. Decoded pixels
        are read straight into their array."""
        try:
            send(self._requests, json.dumps(request).encode())
            send(self._requests, payload)
            if not self._answer.poll(max(int((deadline - time.monotonic()) * 1000), 0)):
                raise _TooLate
            header = json.loads(receive(self._replies) or b"")
            if header.get("shape"):
                pixels = np.empty(header["shape"], np.uint8)
                receive(self._replies, pixels.data)
                return header, [pixels]
            return header, [bytes(receive(self._replies) or b"") for _ in range(header.get("parts", 0))]
        except (OSError, EOFError) as exc:
            raise _WorkerGone from exc

    def stop(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class DecoderPool:
    """``await pool.run(request, payload, timeout)``: a job in the next free worker, within ``timeout`` seconds
    (:class:`DeadlineExceeded` past it, the worker killed and replaced); its answer's header and parts (a decoded
    image as one uint8 array, base64 images as bytes). Use as an async context manager."""

    def __init__(
        self, size: int, max_pixels: int, deadline_s: float, limiter: anyio.CapacityLimiter | None = None
    ) -> None:
        self.size = size
        self.max_pixels = max_pixels
        self.deadline_s = deadline_s
        self._limiter = limiter
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._starting: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DecoderPool:
        started = await asyncio.gather(*(anyio.to_thread.run_sync(_Worker, self.max_pixels) for _ in range(self.size)))
        for worker in started:
            self._all.add(worker)
            self._idle.put_nowait(worker)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._starting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for worker in list(self._all):
            await anyio.to_thread.run_sync(worker.stop)
        self._all.clear()

    def _end(self, worker: _Worker) -> None:
        """Kill ``worker`` now (its CPU work stops) and start a replacement in the background."""
        if worker.process.poll() is None:
            worker.process.kill()
        self._all.discard(worker)
        task = asyncio.get_running_loop().create_task(self._replace(worker))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _replace(self, worker: _Worker) -> None:
        await anyio.to_thread.run_sync(worker.stop)
        try:
            new = await anyio.to_thread.run_sync(_Worker, self.max_pixels)
        except DecoderError as exc:
            log.error("%s; %d decoding workers are left", exc, len(self._all))
            return
        self._all.add(new)
        self._idle.put_nowait(new)

    async def run(self, request: dict[str, Any], payload: bytes, timeout: float) -> tuple[dict[str, Any], list[Any]]:
        """The worker's answer (``ok`` true); a refusal is raised as the :class:`ApiError` it names."""
        deadline = time.monotonic() + timeout  # the worker thread's clock (asyncio's is the same)
        with anyio.fail_after(max(timeout, 0.0)):
            worker = await self._idle.get()
        answered: list[tuple[dict[str, Any], list[Any]]] = []

        def call() -> None:
            answered.append(worker.call(request, payload, deadline))

        try:
            await anyio.to_thread.run_sync(in_background(call), limiter=self._limiter)  # waits, even if cancelled
        except _TooLate:
            raise DeadlineExceeded(self.deadline_s) from None
        except _WorkerGone:
            log.error("a decoding worker ended on a %s job (exit %s)", request.get("op"), worker.process.poll())
            raise ApiError("INVALID_IMAGE", "the image decoder failed on this input") from None
        finally:
            if answered:
                self._idle.put_nowait(worker)
            else:  # passed the deadline, crashed, or its request was cancelled: its CPU work stops now
                self._end(worker)
        header, parts = answered[0]
        if not header["ok"]:
            if header["code"] == "INTERNAL":
                log.error("a decoding worker failed on a %s job: %s", request.get("op"), header["detail"])
            raise ApiError(header["code"], header["detail"])
        return header, parts


class PixelBudget:
    """Decoded pixels held at once by all requests: ``async with budget.hold(n)`` waits (first come, first
    served) until ``n`` are free. ``n`` above the whole budget waits for all of it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        pixels = min(int(pixels), self.total)
        if not self._waiting and self.free >= pixels:
            self.free -= pixels
        else:
            granted = asyncio.get_running_loop().create_future()
            entry = (pixels, granted)
            self._waiting.append(entry)
            try:
                await granted
            except BaseException:
                if granted.done() and not granted.cancelled():
                    self.free += pixels  # granted as the wait was cancelled: give it back
                elif entry in self._waiting:
                    self._waiting.remove(entry)
                self._grant()
                raise
        try:
            yield
        finally:
            self.free += pixels
            self._grant()

    def _grant(self) -> None:
        while self._waiting:
            pixels, granted = self._waiting[0]
            if not granted.done() and pixels > self.free:
                return
            self._waiting.popleft()
            if not granted.done():  # (a waiter cancelled meanwhile is passed over)
                self.free -= pixels
                granted.set_result(None)


# --------------------------------------------------------------------------------------------- frames and scales
def _turn(points: np.ndarray, width: float, height: float, orientation: int) -> np.ndarray:
    """Points (N, 2) of a stored image (width x height) in the image as shown after EXIF ``orientation``
    (pixel corners at integers, as the detector's coordinates are)."""
    x, y = points[:, 0], points[:, 1]
    turned = {
        1: (x, y),
        2: (width - x, y),
        3: (width - x, height - y),
        4: (x, height - y),
        5: (y, x),
        6: (height - y, x),
        7: (height - y, width - x),
        8: (y, width - x),
    }[orientation]
    return np.stack(turned, axis=1)


def _unturn(points: np.ndarray, width: float, height: float, orientation: int) -> np.ndarray:
    """The inverse of :func:`_turn` (``width`` x ``height``: the stored image's size)."""
    x, y = points[:, 0], points[:, 1]
    stored = {
        1: (x, y),
        2: (width - x, y),
        3: (width - x, height - y),
        4: (x, height - y),
        5: (y, x),
        6: (y, height - x),
        7: (width - y, height - x),
        8: (width - y, x),
    }[orientation]
    return np.stack(stored, axis=1)


@dataclass(frozen=True)
class Frame:
    """How a decoded image relates to the full one: decoded at 1/``scale`` (libjpeg maps each ``scale`` x
    ``scale`` block of the stored image to one pixel, the last block of a row or column possibly partial), from a
    stored image of ``stored`` (width, height) at full size and ``decoded`` at this scale, shown turned by
    ``orientation``."""

    scale: int
    stored: tuple[int, int]
    decoded: tuple[int, int]
    orientation: int = 1

    @property
    def full(self) -> tuple[int, int]:
        """(width, height) of the full-size image as shown."""
        width, height = self.stored
        return (height, width) if self.orientation >= 5 else (width, height)

    def to_full(self, points: np.ndarray) -> np.ndarray:
        """Points (N, 2) of the decoded image in the full-size image."""
        if self.scale == 1:
            return np.asarray(points, np.float64)
        stored = _unturn(np.asarray(points, np.float64), *self.decoded, self.orientation) * self.scale
        return _turn(stored, *self.stored, self.orientation)

    def from_full(self, points: np.ndarray) -> np.ndarray:
        """Points (N, 2) of the full-size image in the decoded image."""
        if self.scale == 1:
            return np.asarray(points, np.float64)
        stored = _unturn(np.asarray(points, np.float64), *self.stored, self.orientation) / self.scale
        return _turn(stored, *self.decoded, self.orientation)


def detection_scale(width: int, height: int, det_size: int) -> int:
    """The largest DCT scale at which the image still has ``det_size`` pixels on its longer side (the detector
    shrinks anything larger to that size, so it needs no more)."""
    longer = max(width, height)
    return max(k for k in REDUCED_SCALES if k == 1 or -(-longer // k) >= det_size)


def crop_scale(source_per_crop: float, largest: int) -> int:
    """The largest DCT scale, at most ``largest``, at which a face whose aligned crop takes ``source_per_crop``
    full-size pixels per crop pixel still has at least one decoded pixel per crop pixel (so the crop is never
    enlarged from fewer pixels than the full image has). Shrinking first this way also keeps bilinear warping from
    aliasing: measured on the shared photos, crops cut this way are closer to an antialiased reference crop than
    crops cut from the full image."""
    return max(k for k in REDUCED_SCALES if k == 1 or (k <= largest and k <= source_per_crop))
