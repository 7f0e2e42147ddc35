"""The work behind the routes: one :class:`FaceService` per worker process holds the recognizer (the model, loaded
once), the gallery store, the embedding queue and the bounds on concurrent work.

Decoding, detection and alignment run in threads, embeddings go through the
:class:`~ghostfacenets.serve.batching.EmbeddingQueue`, both within one pool of ``compute_threads`` slots (default:
the cores; each call runs single-threaded), and store calls run in threads too, so the event loop only moves
requests along.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np

from ..gallery.base import GalleryStore, ModelId
from ..pipeline.detect import Face
from ..pipeline.recognizer import FaceRecognizer, Threshold
from .batching import EmbeddingQueue
from .images import UploadedImage, decode_upload
from .problems import ApiError, Overloaded
from .settings import ServiceSettings

T = TypeVar("T")


@dataclass(frozen=True)
class FoundFace:
    """A detected face with its aligned crop and, once embedded, its L2-normalised embedding."""

    face: Face
    crop: np.ndarray
    embedding: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        return face_json(self.face)


def face_json(face: Face) -> dict[str, Any]:
    """``box`` [x1, y1, x2, y2], ``score`` and ``landmarks`` [[x, y] x 5] (left eye, right eye, nose, left and
    right mouth corner, as seen in the image)."""
    return {
        "box": [round(float(v), 2) for v in face.box],
        "score": round(float(face.score), 4),
        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
    }


def load_recognizer(settings: ServiceSettings) -> FaceRecognizer:
    """The recognizer the settings describe (the package's one backend rule picks how the model runs)."""
    if settings.threads is not None:
        import torch

        torch.set_num_threads(settings.threads)  # the PyTorch backends; onnxruntime gets ``threads`` per session
    return FaceRecognizer(
        settings.model,
        threshold=settings.threshold,
        far=settings.far,
        flip=settings.flip,
        device=settings.device,
        backend=settings.backend,
        threads=settings.threads,
        score_threshold=settings.det_threshold,
        max_size=settings.det_size,
        fast_size=settings.det_fast_size or None,
        detector_backend=settings.det_backend,
        **settings.extra,
    )


def open_gallery_store(db: str) -> GalleryStore:
    """The gallery store ``db`` names (an SQLite file path or a ``postgresql://`` URL)."""
    from ..gallery import open_store

    return open_store(db)


class FaceService:
    """What one worker serves with. Use as an async context manager (starts and stops the embedding queue)."""

    def __init__(self, settings: ServiceSettings, recognizer: FaceRecognizer, store: GalleryStore) -> None:
        self.settings = settings
        self.recognizer = recognizer
        self.store = store
        self.model_id: ModelId = recognizer.model_id
        # One pool of thread slots, as many as cores, for all model work: decoding and detecting images, and
        # embedding batches (at most as many at once as there are slots).
        cores = settings.compute_threads or os.cpu_count() or 1
        self._compute = anyio.CapacityLimiter(cores)
        self.queue = EmbeddingQueue(
            recognizer.embed_aligned,
            max_batch=settings.batch_size,
            max_wait_s=settings.batch_wait_ms / 1000,
            capacity=settings.queue_faces,
            concurrency=cores,
            limiter=self._compute,
        )
        self._inflight = 0

    async def __aenter__(self) -> FaceService:
        await self.queue.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.__aexit__(*exc)

    # ------------------------------------------------------------------------------------------------ bounds
    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """A slot for a request's image work, or :class:`Overloaded` at once when ``max_inflight`` are running."""
        if self._inflight >= self.settings.max_inflight:
            raise Overloaded(
                f"{self._inflight} requests are being processed (the limit is {self.settings.max_inflight})"
            )
        self._inflight += 1
        try:
            yield
        finally:
            self._inflight -= 1

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread (store calls and other blocking work)."""
        return await anyio.to_thread.run_sync(function, *args)

    # ------------------------------------------------------------------------------------------------ pipeline
    def threshold(self, value: float | None = None) -> Threshold:
        return self.recognizer.threshold(value)

    def _decode_and_find(
        self, data: bytes, field: str, limit: int, largest_only: bool = False
    ) -> tuple[UploadedImage, list[FoundFace], int]:
        image = decode_upload(data, field, self.settings)
        faces = self.recognizer.detect(image.pixels, largest_only=largest_only)  # largest first
        aligned = [FoundFace(f, self.recognizer.align(image.pixels, f)) for f in faces[:limit]]
        return image, aligned, len(faces)

    async def find_faces(
        self, data: bytes, field: str, max_faces: int | None = None, largest_only: bool = False
    ) -> tuple[UploadedImage, list[FoundFace], int]:
        """Decode one image and find its faces, aligned: the largest ``max_faces`` (default: the setting), and how
        many were found in all (with ``largest_only``, by the detector's fast path, which can miss small faces)."""
        limit = min(max_faces or self.settings.max_faces, self.settings.max_faces)
        return await anyio.to_thread.run_sync(
            self._decode_and_find, data, field, limit, largest_only, limiter=self._compute
        )

    async def embed(self, faces: list[FoundFace]) -> list[FoundFace]:
        """The faces with their embeddings (one trip through the batching queue)."""
        if not faces:
            return []
        embeddings = await self.queue.embed(np.stack([f.crop for f in faces]))
        return [FoundFace(f.face, f.crop, e) for f, e in zip(faces, embeddings)]

    async def largest_faces(
        self, items: list[tuple[bytes, str]], on_multiple: str = "largest"
    ) -> list[tuple[UploadedImage, FoundFace, int]]:
        """The largest face of each image, embedded: detected in parallel, embedded in one trip. NO_FACE for an
        image without a face, MULTIPLE_FACES for one with several when ``on_multiple`` is "error"."""
        fast = on_multiple != "error"  # counting every face needs the full detection
        found = await asyncio.gather(*(self.find_faces(data, field, 1, fast) for data, field in items))
        for (_, field), (_, faces, count) in zip(items, found):
            if not faces:
                raise ApiError(
                    "NO_FACE", f"{field}: no face found (detector score threshold {self.settings.det_threshold})"
                )
            if count > 1 and on_multiple == "error":
                raise ApiError("MULTIPLE_FACES", f"{field}: {count} faces found, expected one")
        embedded = await self.embed([faces[0] for _, faces, _ in found])
        return [(image, face, count) for (image, _, count), face in zip(found, embedded)]
