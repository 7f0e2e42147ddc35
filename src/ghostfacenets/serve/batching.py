"""Embedding faces of concurrent requests together: a bounded queue and a worker that takes whatever is waiting
(up to ``max_batch`` faces, waiting at most ``max_wait_s`` for more) and embeds it as one batch in a thread, with at
most ``concurrency`` batches running at once (each in a slot of the shared ``limiter``, so that embedding and the
requests' other work together keep as many threads busy as there are cores).

While batches run, new requests queue up, so under load batches fill by themselves; with one client the wait adds
at most ``max_wait_s``. The queue holds at most ``capacity`` faces: a request that would pass that is refused at
once with :class:`~ghostfacenets.serve.problems.Overloaded` (503) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import numpy as np

from .problems import Overloaded


@dataclass
class _Job:
    crops: np.ndarray
    future: asyncio.Future[np.ndarray]


class EmbeddingQueue:
    """``await queue.embed(crops)``: embeddings (N, D) of aligned crops (N, 112, 112, 3), computed by ``embed`` in
    batches shared with other callers. Use as an async context manager (starts and stops the worker)."""

    def __init__(
        self,
        embed: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 16,
        max_wait_s: float = 0.002,
        capacity: int = 256,
        concurrency: int = 1,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._embed = embed
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self.concurrency = concurrency
        self._limiter = limiter or anyio.CapacityLimiter(concurrency)
        self._jobs: deque[_Job] = deque()
        self._queued = 0  # faces in self._jobs
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        """Faces waiting to be embedded."""
        return self._queued

    async def __aenter__(self) -> EmbeddingQueue:
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._worker = asyncio.create_task(self._run(), name="ghostfacenets-embedding-queue")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in [self._worker, *self._running]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(Overloaded("the service is shutting down"))
        self._jobs.clear()
        self._queued = 0

    async def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings of ``crops``; raises :class:`Overloaded` at once when the queue cannot take them."""
        if len(crops) == 0:
            raise ValueError("nothing to embed")
        if self._arrived is None:
            raise RuntimeError("the embedding queue is not running (use it as an async context manager)")
        if self._queued + len(crops) > self.capacity:
            raise Overloaded(f"{self._queued} faces are waiting to be embedded (the limit is {self.capacity})")
        job = _Job(crops, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._queued += len(crops)
        self._arrived.set()
        return await job.future

    def _take(self) -> list[_Job]:
        """Jobs for one batch: at least one, then more while they fit in ``max_batch`` faces."""
        taken = [self._jobs.popleft()]
        size = len(taken[0].crops)
        while self._jobs and size + len(self._jobs[0].crops) <= self.max_batch:
            job = self._jobs.popleft()
            taken.append(job)
            size += len(job.crops)
        self._queued -= size
        return taken

    async def _run(self) -> None:
        assert self._arrived is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            deadline = loop.time() + self.max_wait_s
            while self._jobs and self._queued < self.max_batch and loop.time() < deadline:
                with contextlib.suppress(asyncio.TimeoutError):  # more company, or time is up
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                self._arrived.clear()
            while self._jobs:
                await self._slots.acquire()  # while every slot is busy, the next batch fills
                if not self._jobs:
                    self._slots.release()
                    break
                task = asyncio.create_task(self._run_batch(self._take()))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _run_batch(self, jobs: list[_Job]) -> None:
        assert self._slots is not None
        try:
            jobs = [j for j in jobs if not j.future.done()]  # callers that went away
            if not jobs:
                return
            batch = np.concatenate([j.crops for j in jobs])
            try:
                embeddings = await anyio.to_thread.run_sync(self._embed, batch, limiter=self._limiter)
            except Exception as exc:  # the callers get the error; the worker goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(embeddings[start : start + len(job.crops)])
                start += len(job.crops)
        finally:
            self._slots.release()
