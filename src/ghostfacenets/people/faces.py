"""Faces without names from aligned crops: their embeddings and quality as
:class:`~ghostfacenets.gallery.people.UnlabelledFace` records (the records themselves, and :class:`PhotoFaces`, live
with the gallery stores that keep them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import GhostFaceNetsError
from .quality import DEFAULT_QUALITY, QualityModel, QualityParts, quality_parts

if TYPE_CHECKING:
    from ..pipeline.detect import Face
    from ..pipeline.recognizer import FaceRecognizer


def embed_crops(recognizer: FaceRecognizer, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L2-normalised embeddings, raw embeddings, raw embeddings of the mirrored crops) of aligned crops, with the
    recognizer's flip setting (the raw embedding is the sum of the crop's and its mirror's when flip is on)."""
    from ..inference import embed_images

    if len(crops) == 0:
        empty = np.zeros((0, recognizer.model_id.dim), np.float32)
        return empty, empty, empty
    both = embed_images(
        recognizer.embedder,
        np.concatenate([crops, crops[:, :, ::-1]]),
        batch_size=recognizer.batch_size,
        flip=False,
        device=recognizer.device,
        progress=False,
    ).astype(np.float64)
    own, mirrored = both[: len(crops)], both[len(crops) :]
    raw = own + mirrored if recognizer.flip else own
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    if not np.all(np.isfinite(raw)) or np.any(norms == 0):
        raise GhostFaceNetsError("the model produced a zero or non-finite embedding")
    return (raw / norms).astype(np.float32), raw, mirrored


def describe_faces(
    recognizer: FaceRecognizer,
    crops: np.ndarray,
    faces: Sequence[Face | None],
    quality: QualityModel = DEFAULT_QUALITY,
) -> tuple[np.ndarray, list[QualityParts], list[float]]:
    """Embeddings, quality parts and quality scores of aligned ``crops`` (N, 112, 112, 3), each with the detected
    :class:`~ghostfacenets.pipeline.detect.Face` it came from (None for a crop given as is)."""
    embeddings, raw, mirrored = embed_crops(recognizer, crops)
    parts = [
        quality_parts(
            crop,
            raw_vector,
            mirrored=mirror if recognizer.flip else None,
            detector=None if face is None else face.score,
            landmarks=None if face is None else face.landmarks,
        )
        for crop, raw_vector, mirror, face in zip(crops, raw, mirrored, faces)
    ]
    return embeddings, parts, [quality.score(p) for p in parts]
