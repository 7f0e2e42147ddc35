"""The work behind the routes: one :class:`FaceService` per worker process holds the recognizer (the model, loaded
once), the gallery store, the embedding queue, the decoding workers and the bounds on concurrent work.

Decoding runs in worker processes (:mod:`~ghostfacenets.serve.decoding`: ended at the request's deadline, within a
budget of decoded pixels), detection and alignment in threads, embeddings go through the
:class:`~ghostfacenets.serve.batching.EmbeddingQueue`, all within one pool of ``compute_threads`` slots (default:
the cores; each call runs single-threaded), and store calls run in threads too, so the event loop only moves
requests along. Every request's image work has ``deadline_s`` seconds, after which it gets 503
``DEADLINE_EXCEEDED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np

from ..data.align import estimate_transform
from ..gallery.base import GalleryStore, ModelId
from ..liveness.checker import LivenessChecker, LivenessResult
from ..pipeline.detect import Face
from ..pipeline.recognizer import FaceRecognizer
from ..pipeline.results import Threshold
from .batching import EmbeddingQueue
from .decoding import (
    DeadlineExceeded,
    DecoderPool,
    Frame,
    PixelBudget,
    crop_scale,
    detection_scale,
    in_background,
)
from .images import ImageHeader, UploadedImage, check_upload
from .problems import ApiError, Overloaded
from .settings import ServiceSettings

T = TypeVar("T")
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("ghostfacenets_deadline", default=None)


@dataclass(frozen=True)
class FoundFace:
    """A detected face with its aligned crop and, once embedded, its L2-normalised embedding."""

    face: Face
    crop: np.ndarray
    embedding: np.ndarray | None = None
    liveness: LivenessResult | None = None

    def to_json(self) -> dict[str, Any]:
        extra = {"liveness": self.liveness.to_dict()} if self.liveness is not None else {}
        return {**face_json(self.face), **extra}


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


def load_liveness_checker(settings: ServiceSettings) -> LivenessChecker:
    """The liveness check the settings describe, run like the face model (one thread per call)."""
    from ..liveness.runtime import BACKENDS

    return LivenessChecker(
        settings.liveness_model,
        threshold=settings.liveness_threshold,
        device=settings.device,
        backend=settings.backend if settings.backend in BACKENDS else "auto",
        threads=settings.threads,
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
            in_background(recognizer.embed_aligned),
            max_batch=settings.batch_size,
            max_wait_s=settings.batch_wait_ms / 1000,
            capacity=settings.queue_faces,
            concurrency=cores,
            limiter=self._compute,
        )
        self.decoders = DecoderPool(cores, settings.max_pixels, settings.deadline_s, limiter=self._compute)
        self.budget = PixelBudget(settings.pixel_budget)
        self._inflight = 0
        self._liveness: LivenessChecker | None = None
        self._liveness_lock = threading.Lock()

    async def __aenter__(self) -> FaceService:
        await self.decoders.__aenter__()
        if self.settings.liveness:  # required on every request: ready (and run once) before the first
            checker = await anyio.to_thread.run_sync(self.liveness_checker)
            await anyio.to_thread.run_sync(checker.scores, np.full((64, 64, 3), 128, np.uint8), [[8, 8, 40, 40]])
        await self.queue.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.__aexit__(*exc)
        await self.decoders.__aexit__(*exc)

    # ------------------------------------------------------------------------------------------------ bounds
    @contextlib.asynccontextmanager
    async def admitted(self, seconds: float | None = None) -> AsyncIterator[None]:
        """A slot for a request's image work, or :class:`Overloaded` at once when ``max_inflight`` are running;
        the work inside has ``seconds`` (default ``deadline_s``; then :class:`DeadlineExceeded`, its decoding
        stopped)."""
        if self._inflight >= self.settings.max_inflight:
            raise Overloaded(
                f"{self._inflight} requests are being processed (the limit is {self.settings.max_inflight})"
            )
        self._inflight += 1
        seconds = self.settings.deadline_s if seconds is None else seconds
        token = _DEADLINE.set(anyio.current_time() + seconds)
        try:
            with anyio.fail_after(seconds):
                yield
        except TimeoutError:
            raise DeadlineExceeded(seconds) from None
        finally:
            _DEADLINE.reset(token)
            self._inflight -= 1

    def remaining(self) -> float:
        """Seconds left to the current request's image work."""
        deadline = _DEADLINE.get()
        return self.settings.deadline_s if deadline is None else deadline - anyio.current_time()

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread (store calls and other blocking work)."""
        return await anyio.to_thread.run_sync(function, *args)

    async def computing(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread holding one of the compute slots (model work)."""
        return await anyio.to_thread.run_sync(function, *args, limiter=self._compute)

    # ------------------------------------------------------------------------------------------------ pipeline
    def threshold(self, value: float | None = None) -> Threshold:
        return self.recognizer.threshold(value)

    async def _decode(self, data: bytes, header: ImageHeader, scale: int) -> tuple[list[np.ndarray], Frame]:
        """The image decoded at 1/``scale`` (JPEG; other formats at full size), in a list the thread that uses it
        last empties (so that a large image is freed there, not on the event loop), and its frame."""
        job = {"op": "decode", "scale": scale, "orientation": header.orientation}
        job["max_scans"] = self.settings.max_jpeg_scans
        reply, parts = await self.decoders.run(job, data, self.remaining())
        height, width = reply["shape"][:2]
        if reply["scale"] == 1:
            return parts, Frame(1, (width, height), (width, height))
        return parts, Frame(reply["scale"], (header.width, header.height), tuple(reply["stored"]), header.orientation)

    def _detect_and_align(
        self, image: list[np.ndarray], frame: Frame, limit: int, liveness: bool, largest_only: bool
    ) -> tuple[list[Face], int, list[FoundFace] | None]:
        """Faces of a decoded image in full-size pixels, largest first; the scale the largest ``limit`` of them are
        cut out at (:func:`~ghostfacenets.serve.decoding.crop_scale`), and their crops (and liveness) if that is
        this image's scale (else None: the caller decodes again). ``largest_only``: the detector's fast path, which can
        miss small faces. Frees the image."""
        try:
            faces = self.recognizer.detect(image[0], largest_only=largest_only)
            if frame.scale > 1:
                faces = [_face_in(frame, f) for f in faces]
            scale = frame.scale
            for face in faces[:limit]:
                try:
                    matrix = estimate_transform(face.landmarks)
                except ValueError:
                    continue  # no transform: alignment will say so
                source_per_crop = 1.0 / float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
                scale = min(scale, crop_scale(source_per_crop, frame.scale))
            found = self._align(image, frame, faces[:limit], liveness) if scale == frame.scale else None
            return faces, scale, found
        finally:
            image.clear()

    def _align(self, image: list[np.ndarray], frame: Frame, faces: list[Face], liveness: bool) -> list[FoundFace]:
        """The aligned crops of ``faces`` (full-size pixels) cut from a decoded image, with their liveness judged on
        the same image when asked; frees the image."""
        try:
            found = [
                FoundFace(f, self.recognizer.align(image[0], Face(f.box, f.score, frame.from_full(f.landmarks))))
                for f in faces
            ]
            if liveness and found:
                boxes = [_box_in(frame, f.box) for f in faces]
                results = self.liveness_checker().check(image[0], boxes)
                found = [dataclasses.replace(f, liveness=r) for f, r in zip(found, results)]
            return found
        finally:
            image.clear()

    def liveness_checker(self) -> LivenessChecker:
        """The liveness check, loaded at start when every request needs it, else by the first request that asks
        (with ExecuTorch, lowering it takes tens of seconds the first time; the program is cached on disk)."""
        with self._liveness_lock:
            if self._liveness is None:
                self._liveness = load_liveness_checker(self.settings)
            return self._liveness

    def wants_liveness(self, requested: bool | None) -> bool:
        """Whether a request's faces get the liveness check: always when the service requires it (a request may
        not turn it off), else when the request asks."""
        if self.settings.liveness:
            if requested is False:
                raise ApiError("VALIDATION", "this service checks the liveness of every face; leave out liveness=false")
            return True
        return bool(requested)

    async def find_faces(
        self,
        data: bytes,
        field: str,
        max_faces: int | None = None,
        liveness: bool = False,
        largest_only: bool = False,
    ) -> tuple[UploadedImage, list[FoundFace], int]:
        """Decode one image and find its faces, aligned: the largest ``max_faces`` (default: the setting), and how
        many were found in all (with ``largest_only``, by the detector's fast path, which can miss small faces); with
        ``liveness`` each face's liveness is judged (:meth:`refuse_spoofs` refuses).

        A JPEG is decoded at the smallest size the detector needs (``det_size`` pixels on the longer side); when a
        face found needs more pixels for its crop than that decode has, a second decode at the size it needs cuts
        the crops. Each decoded image holds its share of the pixel budget until its crops are cut, then it is freed.
        """
        limit = min(max_faces or self.settings.max_faces, self.settings.max_faces)
        header = await anyio.to_thread.run_sync(check_upload, data, field, self.settings)
        first = detection_scale(header.width, header.height, self.settings.det_size) if header.format == "JPEG" else 1
        async with self.budget.hold(header.decode_cost(first)):
            image, frame = await self._decode(data, header, first)
            size = frame.full
            faces, scale, found = await anyio.to_thread.run_sync(
                in_background(self._detect_and_align),
                image,
                frame,
                limit,
                liveness,
                largest_only,
                limiter=self._compute,
            )
        if found is None:  # a face needs more pixels than the first decode has
            async with self.budget.hold(header.decode_cost(scale)):
                image, frame = await self._decode(data, header, scale)
                align = in_background(self._align)
                found = await anyio.to_thread.run_sync(
                    align, image, frame, faces[:limit], liveness, limiter=self._compute
                )
        return UploadedImage(field, size[0], size[1], header.sha256), found, len(faces)

    @staticmethod
    def refuse_spoofs(field: str, faces: list[FoundFace]) -> None:
        """SPOOF_SUSPECTED for the first face judged not live."""
        for index, found in enumerate(faces):
            if found.liveness is not None and not found.liveness.is_live:
                which = f" face {index}" if len(faces) > 1 else ""
                raise ApiError(
                    "SPOOF_SUSPECTED",
                    f"{field}{which}: the face does not look live ({found.liveness.describe()}); refused",
                )

    async def embed(self, faces: list[FoundFace]) -> list[FoundFace]:
        """The faces with their embeddings (one trip through the batching queue)."""
        if not faces:
            return []
        embeddings = await self.queue.embed(np.stack([f.crop for f in faces]))
        return [dataclasses.replace(f, embedding=e) for f, e in zip(faces, embeddings)]

    async def largest_faces(
        self, items: list[tuple[bytes, str]], on_multiple: str = "largest", liveness: bool = False
    ) -> list[tuple[UploadedImage, FoundFace, int]]:
        """The largest face of each image, embedded: detected in parallel, embedded in one trip. NO_FACE for an
        image without a face, MULTIPLE_FACES for one with several when ``on_multiple`` is "error", and with
        ``liveness`` SPOOF_SUSPECTED for a face judged not live (before anything is embedded)."""
        fast = on_multiple != "error"  # counting every face needs the full detection
        found = await asyncio.gather(*(self.find_faces(data, field, 1, liveness, fast) for data, field in items))
        for (_, field), (_, faces, count) in zip(items, found):
            if not faces:
                raise ApiError(
                    "NO_FACE", f"{field}: no face found (detector score threshold {self.settings.det_threshold})"
                )
            if count > 1 and on_multiple == "error":
                raise ApiError("MULTIPLE_FACES", f"{field}: {count} faces found, expected one")
            self.refuse_spoofs(field, faces)
        embedded = await self.embed([faces[0] for _, faces, _ in found])
        return [(image, face, count) for (image, _, count), face in zip(found, embedded)]


def _box_in(frame: Frame, box: np.ndarray) -> np.ndarray:
    """A full-size box (x1, y1, x2, y2) in a decoded image."""
    corners = frame.from_full(np.asarray(box, np.float64).reshape(2, 2))
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def _face_in(frame: Frame, face: Face) -> Face:
    """A face found in a decoded image, in full-size pixels."""
    corners = frame.to_full(face.box.reshape(2, 2))
    box = np.concatenate([corners.min(axis=0), corners.max(axis=0)]).clip(0, np.tile(frame.full, 2))
    return Face(box.astype(np.float32), face.score, frame.to_full(face.landmarks).astype(np.float32))
