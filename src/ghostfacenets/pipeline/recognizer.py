"""``FaceRecognizer``: detect, align, embed, verify and identify faces in photos with a GhostFaceNet."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..data.align import align_face
from ..data.images import ImageSource, encode_png, load_image
from ..data.transforms import INPUT_SIZE
from ..errors import GhostFaceNetsError
from ..gallery import (
    DEFAULT_GALLERY,
    Enrolled,
    GalleryStore,
    ModelId,
    NewFace,
    NotFoundError,
    is_postgres_url,
    open_store,
)
from ..gallery.base import check_model
from ..inference import FILE_RUNTIMES, embed_images, load_embedder, resolve_device
from ..liveness.checker import LivenessChecker, LivenessResult
from ..model_io import weights_fingerprint
from .detect import Face, FaceDetector, create_detector
from .results import FaceEmbedding, Identification, Match, NoFaceError, Threshold, ThresholdError, Verification

DEFAULT_MODEL = "ghostfacenetv1-1.3-1.ms1mv3-arcface"
DEFAULT_FAR = 1e-3
# Used only when the model carries no calibrated thresholds (and none is given): the cosine threshold of the official
# README's LFW example (GhostFaceNetV1-1.3-2, flip TTA, best accuracy on LFW). Not calibrated for any other model or
# data; ``ghostfacenets calibrate`` measures the right one for a target false-accept rate.
FALLBACK_THRESHOLD = 0.2235
FALLBACK_NOTE = (
    "fallback: not calibrated for this model; the official README's LFW cosine threshold for "
    "GhostFaceNetV1-1.3-2 (run `ghostfacenets calibrate` on labelled pairs for a threshold at a "
    "known FAR)"
)
ColorOrder = Literal["RGB", "BGR"]


# One face found by ``FaceRecognizer._faces``: the face (None for an aligned crop), its aligned crop, the number of
# faces in its image, and its liveness when checked.
_Found = tuple[Face | None, np.ndarray, int, LivenessResult | None]


@dataclass
class _Loaded:
    embedder: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    model_name: str = "model"
    fingerprint: str = ""


def image_sha256(source: ImageSource) -> str:
    """sha256 of an image file's bytes, of encoded bytes, or of a decoded array's pixels (with its shape)."""
    if isinstance(source, (str, Path)):
        from ..files import sha256_file

        return sha256_file(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(source)).hexdigest()
    array = np.ascontiguousarray(load_image(source))
    return hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()


def _describe(source: Any, index: int | None = None) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"image {index} ({type(source).__name__})" if index is not None else f"<{type(source).__name__}>"


def _detection_record(record: FaceEmbedding) -> dict[str, Any] | None:
    """What a gallery keeps of a face's detection: box, score, landmarks, faces in the image, and its liveness."""
    if record.face is None:
        return None
    extra = {"liveness": record.liveness.to_dict()} if record.liveness is not None else {}
    return {**record.face.to_dict(), "faces_in_image": record.faces_in_image, **extra}


def _as_list(images: Any) -> tuple[list[Any], bool]:
    """(sources, was_a_batch): a list/tuple or a 4-D array is a batch; anything else one image."""
    if isinstance(images, (list, tuple)):
        return list(images), True
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images), True
    return [images], False


class FaceRecognizer:
    """Face verification and identification with a GhostFaceNet, from photos to decisions.

    ``model``: a pretrained name (default: the official GhostFaceNetV1-1.3-1 MS1MV3 weights, downloaded on first
    use), a ``.h5`` / ``.safetensors`` / ``.onnx`` file, or an ``nn.Module``. ``detector``: "retinaface" or a
    :class:`FaceDetector`. ``threshold``: fixed cosine threshold (else the model's calibrated one at ``far``, else a
    labelled fallback). ``flip``: flip test-time augmentation as in the paper. ``device``: None picks CUDA when
    available. ``backend``: how the model runs (:func:`ghostfacenets.inference.load_embedder`; "auto" is the
    package's one rule). ``threads``: onnxruntime threads per call of the embedder and a detector given by name
    (default: all cores; a server running requests in parallel wants 1). ``detector_backend``: how a detector given
    by name runs (:mod:`ghostfacenets.inference.detection`; "auto": the same rule as the model's).
    ``detector_options`` go to the detector (``score_threshold``, ``max_size``, ``fast_size``, ...). ``liveness``:
    True (the shipped MiniFASNets at their default threshold) or a :class:`~ghostfacenets.liveness.LivenessChecker`
    refuses faces judged not live in ``verify``, ``enroll`` and ``identify`` with
    :class:`~ghostfacenets.liveness.SpoofSuspectedError` (each of those methods also takes ``liveness=`` for one call).

    Images are file paths, encoded bytes, PIL images or uint8 numpy arrays (RGB unless ``color_order="BGR"``);
    lists (or 4-D arrays) of them are batches. When an image holds several faces the largest is used; the
    ``*_faces`` methods return every face.
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        detector: str | FaceDetector = "retinaface",
        *,
        threshold: float | None = None,
        far: float | None = None,
        flip: bool = True,
        device: str | torch.device | None = None,
        backend: str = "auto",
        batch_size: int = 64,
        threads: int | None = None,
        liveness: bool | LivenessChecker = False,
        detector_backend: str = "auto",
        **detector_options: Any,
    ) -> None:
        if isinstance(detector, str):
            detector_options["backend"] = detector_backend
            if threads is not None:
                detector_options["threads"] = threads
        self.detector = create_detector(detector, **detector_options)
        self.threads = threads
        self.flip = flip
        self.batch_size = batch_size
        self.device = device
        self.backend = backend
        self._fixed_threshold = threshold
        self.far = far
        self._loaded = self._load(model)
        self._model_id: ModelId | None = None
        self.liveness = bool(liveness)
        self._liveness_checker = liveness if isinstance(liveness, LivenessChecker) else None
        if threshold is None:
            self.threshold()  # fail now, not at the first comparison, if ``far`` has no calibration

    # ---------------------------------------------------------------------------------------------- model
    def _load(self, model: Any) -> _Loaded:
        if isinstance(model, (str, Path)) and Path(model).suffix.lower() in FILE_RUNTIMES:  # .onnx, .pte, .tflite
            embedder = load_embedder(model, self.device, self.backend, self.threads)
            from ..files import sha256_file

            metadata = dict(getattr(embedder, "metadata", {}))  # the file's ghostfacenets metadata
            return _Loaded(embedder, metadata, Path(model).name, sha256_file(model))
        device = resolve_device(self.device)  # before loading: a bad device fails before any download
        module: torch.nn.Module
        if isinstance(model, (str, Path)):
            from ..model_io import load_model

            module = load_model(model)
            name = str(model) if not Path(model).exists() else Path(model).name
        elif isinstance(model, torch.nn.Module):
            module, name = model, type(model).__name__
        else:
            raise GhostFaceNetsError(f"cannot use a {type(model).__name__} as a model; give a name, a file or a module")
        metadata = dict(getattr(module, "metadata", {}) or {})
        name = metadata.get("source", {}).get("name") or name
        embedder = load_embedder(module, device, self.backend, self.threads)
        return _Loaded(embedder, metadata, name, weights_fingerprint(module))

    @property
    def embedder(self) -> Any:
        """The embedder the model runs as (:func:`ghostfacenets.inference.load_embedder`)."""
        return self._loaded.embedder

    @property
    def metadata(self) -> dict[str, Any]:
        """The model's metadata (source, licence, calibrated ``thresholds``, ...)."""
        return self._loaded.metadata

    @property
    def model_id(self) -> ModelId:
        """Identifies the embedding space (weights fingerprint, size, flip) for galleries."""
        if self._model_id is None:
            dim = (
                self._loaded.embedder.embedding_size
                or self.embed_aligned(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)).shape[1]
            )
            self._model_id = ModelId(self._loaded.model_name, self._loaded.fingerprint, int(dim), self.flip)
        return self._model_id

    @property
    def liveness_checker(self) -> LivenessChecker:
        """The liveness check (the shipped MiniFASNets at their default threshold unless one was given), loaded on
        first use, on the recognizer's device, threads and backend where the liveness models have it."""
        if self._liveness_checker is None:
            from ..liveness.runtime import BACKENDS

            backend = self.backend if self.backend in BACKENDS else "auto"
            self._liveness_checker = LivenessChecker(device=self.device, backend=backend, threads=self.threads)
        return self._liveness_checker

    def _gate(self, liveness: bool | None) -> LivenessChecker | None:
        return self.liveness_checker if (self.liveness if liveness is None else liveness) else None

    # ---------------------------------------------------------------------------------------------- thresholds
    def threshold(self, threshold: float | None = None, far: float | None = None) -> Threshold:
        """The decision threshold: ``threshold`` if given, else the recognizer's fixed one, else the model's
        calibrated threshold at ``far`` (default: the recognizer's ``far``, else 1e-3 if calibrated, else the lowest
        calibrated FAR) among those calibrated with the recognizer's flip setting (an entry without ``flip`` counts
        as flip on), else the labelled fallback."""
        value = threshold if threshold is not None else self._fixed_threshold
        if value is not None:
            if not -1.0 <= float(value) <= 1.0:
                raise ThresholdError(f"a cosine threshold lies in [-1, 1], got {value}")
            return Threshold(float(value), "user", note="given by the user")
        far = far if far is not None else self.far
        entries = [t for t in self.metadata.get("thresholds") or [] if "far" in t and "threshold" in t]
        calibrated = [t for t in entries if bool(t.get("flip", True)) == self.flip]  # flip changes the scores
        if calibrated:
            if far is None:
                chosen = next((t for t in calibrated if math.isclose(t["far"], DEFAULT_FAR)), None)
                chosen = chosen or min(calibrated, key=lambda t: t["far"])
            else:
                chosen = next((t for t in calibrated if math.isclose(t["far"], far, rel_tol=1e-6)), None)
                if chosen is None:
                    known = ", ".join(f"{t['far']:g}" for t in calibrated)
                    raise ThresholdError(f"the model has calibrated thresholds at FAR {known}, not at {far:g}")
            note = (
                f"calibrated at FAR {chosen['far']:g} on {chosen.get('set', 'unnamed set')}"
                f" ({chosen.get('pairs', '?')} pairs)"
            )
            return Threshold(float(chosen["threshold"]), "calibrated", float(chosen["far"]), chosen.get("set"), note)
        if far is not None and entries:
            other, mine = ("off", "on") if self.flip else ("on", "off")
            raise ThresholdError(
                f"the model's thresholds were calibrated with flip {other}, not with flip {mine}; "
                f"run `ghostfacenets calibrate` with flip {mine}, or give a threshold"
            )
        if far is not None:
            raise ThresholdError(
                "the model carries no calibrated thresholds; run `ghostfacenets calibrate` on "
                "labelled pairs, or give a threshold"
            )
        return Threshold(FALLBACK_THRESHOLD, "fallback", note=FALLBACK_NOTE)

    # ---------------------------------------------------------------------------------------------- stages
    def detect(self, image: ImageSource, color_order: ColorOrder = "RGB", *, largest_only: bool = False) -> list[Face]:
        """Every face in one image, largest first; with ``largest_only``, by the detector's fast path for callers
        that use only the largest face (it can miss the smaller ones)."""
        return self._detect(load_image(image, color_order), largest_only)

    def _detect(self, pixels: np.ndarray, largest_only: bool = False) -> list[Face]:
        faces = self.detector.detect_largest(pixels) if largest_only else self.detector.detect(pixels)
        return sorted(faces, key=lambda f: -f.area)

    def align(self, image: ImageSource, face: Face, color_order: ColorOrder = "RGB") -> np.ndarray:
        """The 112x112 RGB crop of ``face`` aligned to the ArcFace template."""
        return align_face(load_image(image, color_order), face.landmarks)

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings (N, D) of aligned uint8 RGB crops (N, 112, 112, 3)."""
        raw = embed_images(
            self.embedder, crops, batch_size=self.batch_size, flip=self.flip, device=self.device, progress=False
        )
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        if not np.all(np.isfinite(raw)) or np.any(norms == 0):
            raise GhostFaceNetsError("the model produced a zero or non-finite embedding")
        return (raw / norms).astype(np.float32)

    def _faces(
        self,
        images: Sequence[Any],
        color_order: ColorOrder,
        all_faces: bool,
        aligned: bool | None,
        liveness: LivenessChecker | None = None,
    ) -> list[list[_Found]]:
        """Per image: (face or None for an aligned crop, aligned crop, faces found, liveness) for the largest face
        (an image without one raises :class:`NoFaceError`) or every face (none for an image without one). With
        ``liveness``, a face judged not live raises :class:`~ghostfacenets.liveness.SpoofSuspectedError`."""
        result: list[list[_Found]] = []
        for index, source in enumerate(images):
            pixels = load_image(source, color_order)
            name = _describe(source, index if len(images) > 1 else None)
            is_crop = aligned if aligned is not None else pixels.shape[:2] == (INPUT_SIZE, INPUT_SIZE)
            if is_crop:
                if liveness is not None:
                    raise GhostFaceNetsError(
                        f"{name}: liveness is judged on photos (the face with its surroundings), not on aligned crops"
                    )
                if pixels.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
                    raise GhostFaceNetsError(
                        f"{name}: an aligned crop must be {INPUT_SIZE}x{INPUT_SIZE}"
                        f", got {pixels.shape[1]}x{pixels.shape[0]}"
                    )
                result.append([(None, pixels, 1, None)])
                continue
            faces = self._detect(pixels, largest_only=not all_faces)
            if not faces and not all_faces:
                raise NoFaceError(
                    f"{name}: no face found (detector score threshold {getattr(self.detector, 'score_threshold', '?')})"
                )
            chosen = faces if all_faces else faces[:1]
            live = liveness.require_live(pixels, chosen, name) if liveness is not None else [None] * len(chosen)
            result.append([(f, align_face(pixels, f.landmarks), len(faces), r) for f, r in zip(chosen, live)])
        return result

    def _embed_records(self, per_image: list[list[_Found]]) -> list[list[FaceEmbedding]]:
        flat = [item for items in per_image for item in items]
        if not flat:
            return [[] for _ in per_image]
        embeddings = iter(self.embed_aligned(np.stack([crop for _, crop, _, _ in flat])))
        return [
            [FaceEmbedding(face, next(embeddings), count, live) for face, _, count, live in items]
            for items in per_image
        ]

    # ---------------------------------------------------------------------------------------------- embeddings
    def embed(self, images: Any, *, aligned: bool | None = None, color_order: ColorOrder = "RGB") -> np.ndarray:
        """L2-normalised embedding (D,) of the largest face of one image, or (N, D) for a batch.

        ``aligned``: True for 112x112 crops already aligned to the ArcFace template, False to always detect; None
        treats exactly 112x112 inputs as aligned crops and detects in everything else.
        """
        sources, batch = _as_list(images)
        records = self._embed_records(self._faces(sources, color_order, False, aligned))
        embeddings = np.stack([r[0].embedding for r in records])
        return embeddings if batch else embeddings[0]

    def embed_faces(
        self, image: ImageSource, color_order: ColorOrder = "RGB", *, liveness: bool | None = None
    ) -> list[FaceEmbedding]:
        """Every face of one image with its embedding, largest first; [] when there is none. ``liveness``: check
        each face (None: the recognizer's setting), refusing the image when one is judged not live."""
        return self._embed_records(self._faces([image], color_order, True, False, self._gate(liveness)))[0]

    # ---------------------------------------------------------------------------------------------- verification
    def verify(
        self,
        a: Any,
        b: Any,
        *,
        threshold: float | None = None,
        far: float | None = None,
        color_order: ColorOrder = "RGB",
        aligned: bool | None = None,
        liveness: bool | None = None,
    ) -> Verification | list[Verification]:
        """Are the largest faces of ``a`` and ``b`` the same person? Lists of equal length give a list of results.
        ``liveness``: refuse a face judged not live (None: the recognizer's setting)."""
        sources_a, batch_a = _as_list(a)
        sources_b, batch_b = _as_list(b)
        if batch_a != batch_b or len(sources_a) != len(sources_b):
            raise GhostFaceNetsError("verify takes two images, or two batches of the same length")
        chosen = self.threshold(threshold, far)
        records = self._embed_records(
            self._faces(sources_a + sources_b, color_order, False, aligned, self._gate(liveness))
        )
        n = len(sources_a)
        results = []
        for ra, rb in zip(records[:n], records[n:]):
            similarity = float(np.clip(np.dot(ra[0].embedding, rb[0].embedding), -1.0, 1.0))
            results.append(
                Verification(
                    similarity,
                    chosen,
                    similarity > chosen.value,
                    ra[0].face,
                    rb[0].face,
                    ra[0].faces_in_image,
                    rb[0].faces_in_image,
                    ra[0].liveness,
                    rb[0].liveness,
                )
            )
        return results if batch_a else results[0]

    # ---------------------------------------------------------------------------------------------- galleries
    @contextlib.contextmanager
    def _store(self, store: GalleryStore | str | Path, create: bool) -> Iterator[GalleryStore]:
        """``store`` itself, or the store ``--db`` names, opened for the block."""
        if isinstance(store, (str, Path)):
            with open_store(store, create=create) as opened:
                yield opened
        else:
            yield store

    def _check_gallery(self, store: GalleryStore, gallery: str) -> None:
        """Fail before embedding when the gallery holds another model's embeddings."""
        try:
            bound = store.gallery(gallery).model
        except NotFoundError:
            return
        check_model(gallery, bound, self.model_id)

    def enroll(
        self,
        store: GalleryStore | str | Path,
        name: str,
        images: Any,
        *,
        gallery: str = DEFAULT_GALLERY,
        metadata: dict[str, Any] | None = None,
        store_crops: bool = False,
        color_order: ColorOrder = "RGB",
        aligned: bool | None = None,
        liveness: bool | None = None,
    ) -> Enrolled:
        """Add the largest face of each image to subject ``name`` of ``gallery`` (both created if new) in one
        transaction. Images already enrolled for ``name`` are skipped; every image must hold a face. ``store``: a
        :class:`GalleryStore` or what ``--db`` takes (an SQLite file is created only once every image is embedded,
        so a failed enrolment leaves none behind). ``store_crops`` keeps each face's aligned 112x112 crop (PNG) in
        the gallery, which ``reembed`` needs; no photo is ever stored. ``liveness``: refuse the enrolment, before
        anything is stored, when a face is judged not live (None: the recognizer's setting); the score is kept with
        each face."""
        sources, _ = _as_list(images)
        if not isinstance(store, (str, Path)) or is_postgres_url(store) or Path(store).exists():
            with self._store(store, create=False) as opened:
                self._check_gallery(opened, gallery)
        per_image = self._faces(sources, color_order, False, aligned, self._gate(liveness))
        records = self._embed_records(per_image)
        faces = [
            NewFace(
                r[0].embedding,
                image_sha256(source),
                _describe(source),
                _detection_record(r[0]),
                encode_png(items[0][1]) if store_crops else None,
            )
            for source, r, items in zip(sources, records, per_image)
        ]
        with self._store(store, create=True) as opened:
            return opened.enroll(gallery, name, faces, self.model_id, metadata)

    def _identify(
        self, store: GalleryStore, gallery: str, records: list[FaceEmbedding], k: int, chosen: Threshold
    ) -> list[Identification]:
        if not records:
            return []
        found = store.search(gallery, np.stack([r.embedding for r in records]), self.model_id, k)
        return [
            Identification(
                r.face,
                [Match(c.name, c.similarity, c.similarity > chosen.value, c.subject_id) for c in candidates],
                chosen,
                r.faces_in_image,
                r.liveness,
            )
            for r, candidates in zip(records, found)
        ]

    def identify(
        self,
        image: ImageSource,
        store: GalleryStore | str | Path,
        k: int = 5,
        *,
        gallery: str = DEFAULT_GALLERY,
        threshold: float | None = None,
        far: float | None = None,
        color_order: ColorOrder = "RGB",
        aligned: bool | None = None,
        liveness: bool | None = None,
    ) -> Identification:
        """The ``k`` subjects of ``gallery`` most similar to the largest face in ``image``. ``liveness``: refuse a
        face judged not live (None: the recognizer's setting)."""
        chosen = self.threshold(threshold, far)
        with self._store(store, create=False) as opened:
            opened.gallery(gallery)  # a missing gallery fails before the photo is embedded
            self._check_gallery(opened, gallery)
            (record,) = self._embed_records(self._faces([image], color_order, False, aligned, self._gate(liveness)))[0]
            return self._identify(opened, gallery, [record], k, chosen)[0]

    def identify_faces(
        self,
        image: ImageSource,
        store: GalleryStore | str | Path,
        k: int = 5,
        *,
        gallery: str = DEFAULT_GALLERY,
        threshold: float | None = None,
        far: float | None = None,
        color_order: ColorOrder = "RGB",
        liveness: bool | None = None,
    ) -> list[Identification]:
        """``identify`` for every face in ``image``, largest first ([] when there is none); ``liveness``: refuse the
        image when a face is judged not live (None: the recognizer's setting)."""
        chosen = self.threshold(threshold, far)
        with self._store(store, create=False) as opened:
            opened.gallery(gallery)
            self._check_gallery(opened, gallery)
            records = self.embed_faces(image, color_order, liveness=liveness)
            return self._identify(opened, gallery, records, k, chosen)

    def reembed(self, store: GalleryStore | str | Path, gallery: str = DEFAULT_GALLERY, progress: bool = False) -> int:
        """Re-embed every face of ``gallery`` from its stored crop with this recognizer's model and bind the
        gallery to it, in one transaction; returns the number of faces. Refused (nothing changed) when a face has
        no crop (enrolled without ``store_crops``)."""
        from tqdm import tqdm

        with self._store(store, create=False) as opened:
            info = opened.gallery(gallery)
            if info.crops < info.faces:
                raise GhostFaceNetsError(
                    f"{info.faces - info.crops} of the {info.faces} faces of gallery {gallery!r} have no stored crop "
                    "(enrolled without --store-crops): they cannot be re-embedded; enrol them again instead"
                )
            embeddings: dict[int, np.ndarray] = {}
            batch: list[tuple[int, np.ndarray]] = []
            bar = tqdm(total=info.faces, desc="re-embedding", unit="face", disable=not progress, leave=False)

            def flush() -> None:
                vectors = self.embed_aligned(np.stack([crop for _, crop in batch]))
                embeddings.update(zip((face_id for face_id, _ in batch), vectors))
                bar.update(len(batch))
                batch.clear()

            for face_id, png in opened.crops(gallery):
                batch.append((face_id, load_image(png)))
                if len(batch) == self.batch_size:
                    flush()
            if batch:
                flush()
            bar.close()
            opened.replace_embeddings(gallery, embeddings, self.model_id)
            return len(embeddings)
