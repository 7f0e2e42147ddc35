"""The embedding queue: concurrent requests share batches, a full queue refuses at once, errors reach callers."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest


class SlowEmbedder:
    """A real function run in the queue's thread: each crop's embedding is its mean pixel value, and every batch
    takes ``seconds``. (The tests' conftest requires the serve extra.)"""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.batches: list[int] = []
        self.threads: set[int] = set()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        self.batches.append(len(crops))
        self.threads.add(threading.get_ident())
        time.sleep(self.seconds)
        return crops.reshape(len(crops), -1).mean(axis=1, keepdims=True).astype(np.float32)


def _crops(*values: int) -> np.ndarray:
    return np.stack([np.full((4, 4, 3), v, np.uint8) for v in values])


def test_concurrent_jobs_share_batches_and_get_their_own_results() -> None:
    from ghostfacenets.serve.batching import EmbeddingQueue

    embedder = SlowEmbedder()

    async def main() -> list[np.ndarray]:
        async with EmbeddingQueue(embedder, max_batch=8, max_wait_s=0.01, capacity=64) as queue:
            return await asyncio.gather(*(queue.embed(_crops(i, i + 100)) for i in range(12)))

    results = asyncio.run(main())
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result[:, 0], [i, i + 100])
    assert sum(embedder.batches) == 24
    assert max(embedder.batches) == 8  # four jobs of two faces per batch
    assert len(embedder.batches) == 3
    assert threading.get_ident() not in embedder.threads  # the event loop never runs the model


def test_a_lone_job_waits_at_most_max_wait() -> None:
    from ghostfacenets.serve.batching import EmbeddingQueue

    embedder = SlowEmbedder(0.0)

    async def main() -> float:
        async with EmbeddingQueue(embedder, max_batch=16, max_wait_s=0.05, capacity=64) as queue:
            start = time.perf_counter()
            await queue.embed(_crops(1))
            return time.perf_counter() - start

    assert asyncio.run(main()) < 1.0
    assert embedder.batches == [1]


def test_full_queue_refuses_at_once() -> None:
    from ghostfacenets.serve.batching import EmbeddingQueue
    from ghostfacenets.serve.problems import Overloaded

    embedder = SlowEmbedder(0.3)

    async def main() -> tuple[int, int, float]:
        async with EmbeddingQueue(embedder, max_batch=2, max_wait_s=0.0, capacity=4) as queue:
            first = asyncio.ensure_future(queue.embed(_crops(1, 2)))  # taken by the worker
            await asyncio.sleep(0.05)
            waiting = [
                asyncio.ensure_future(queue.embed(_crops(3, 4))),
                asyncio.ensure_future(queue.embed(_crops(5, 6))),
            ]
            await asyncio.sleep(0)
            assert queue.queued == 4
            start = time.perf_counter()
            with pytest.raises(Overloaded) as refused:
                await queue.embed(_crops(7))
            refused_after = time.perf_counter() - start
            assert refused.value.status == 503 and refused.value.headers["Retry-After"]
            done = await asyncio.gather(first, *waiting)
            return len(done), queue.queued, refused_after

    count, left, refused_after = asyncio.run(main())
    assert count == 3 and left == 0
    assert refused_after < 0.05


def test_errors_reach_the_callers_and_the_worker_goes_on() -> None:
    from ghostfacenets.serve.batching import EmbeddingQueue

    calls = []

    def flaky(crops: np.ndarray) -> np.ndarray:
        calls.append(len(crops))
        if len(calls) == 1:
            raise RuntimeError("model failed")
        return np.zeros((len(crops), 1), np.float32)

    async def main() -> np.ndarray:
        async with EmbeddingQueue(flaky, max_batch=4, max_wait_s=0.0, capacity=8) as queue:
            with pytest.raises(RuntimeError, match="model failed"):
                await queue.embed(_crops(1))
            return await queue.embed(_crops(2))

    assert asyncio.run(main()).shape == (1, 1)


def test_batches_run_side_by_side_within_the_shared_limiter() -> None:
    """With two slots, two batches run at once (in two threads), never three; a third waits and fills up."""
    import anyio

    from ghostfacenets.serve.batching import EmbeddingQueue

    running, most = 0, 0
    lock = threading.Lock()
    sizes: list[int] = []

    def embed(crops: np.ndarray) -> np.ndarray:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            sizes.append(len(crops))
        time.sleep(0.2)
        with lock:
            running -= 1
        return np.zeros((len(crops), 1), np.float32)

    async def main() -> None:
        limiter = anyio.CapacityLimiter(2)
        async with EmbeddingQueue(embed, max_batch=4, max_wait_s=0.0, capacity=64, concurrency=2, limiter=limiter) as q:
            first = [asyncio.ensure_future(q.embed(_crops(i))) for i in range(2)]
            await asyncio.sleep(0.05)  # the first batch is running
            later = [asyncio.ensure_future(q.embed(_crops(i))) for i in range(6)]
            await asyncio.gather(*first, *later)

    asyncio.run(main())
    assert most == 2
    assert sum(sizes) == 8 and max(sizes) == 4  # faces that waited for a slot were batched together
    assert len(sizes) == 3
