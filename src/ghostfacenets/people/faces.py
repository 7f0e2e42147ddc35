"""Faces without names, as a photo library finds them: what a caller hands to :func:`ghostfacenets.people.add_faces`
(photos, video moments, anything with embeddings), and how photos become such faces (:func:`embed_photo_faces`).

A :class:`PhotoFaces` is one photo (or one moment of a video) with every face found in it. Its ``reference`` is what
the caller knows it by (a path, a database id, ``"holiday.mp4@12.3s"``): it is stored and shown, never opened. Its
``key`` (default: the sha256 of the reference) identifies it: a photo whose key the gallery holds is skipped, so a
re-run only adds what is new, and two faces with one key are never grouped as one person unless a user says so.
Give the sha256 of the photo's bytes as the key where there is a photo (:func:`ghostfacenets.files.sha256_file`):
a renamed or moved photo is then still known.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.images import encode_png
from ..errors import GhostFaceNetsError
from .quality import DEFAULT_QUALITY, QualityModel, QualityParts, quality_parts

if TYPE_CHECKING:
    from ..pipeline.detect import Face
    from ..pipeline.recognizer import FaceRecognizer

MAX_REFERENCE = 1000  # characters of a reference


@dataclass(frozen=True)
class UnlabelledFace:
    """One face to add without a name: its L2-normalised ``embedding`` (of the gallery's model), ``quality`` in
    [0, 1] (:mod:`ghostfacenets.people.quality`; faces below the gallery's ``min_quality`` are kept but never
    grouped), ``box`` (x1, y1, x2, y2 in the photo's or frame's pixels), the detector's record (``score``,
    ``landmarks``, quality parts, anything JSON) and the aligned 112x112 ``crop`` as PNG bytes, only when the caller
    opted in to keeping crops."""

    embedding: np.ndarray
    quality: float
    box: Sequence[float] | None = None
    detection: Mapping[str, Any] | None = None
    crop: bytes | None = None


@dataclass(frozen=True)
class PhotoFaces:
    """A photo or a video moment and its faces (none is fine: the photo is recorded as done)."""

    reference: str
    faces: Sequence[UnlabelledFace] = field(default_factory=tuple)
    key: str | None = None  # sha256 hex of the photo's bytes; default sha256 of the reference

    @property
    def photo_key(self) -> str:
        return self.key if self.key is not None else hashlib.sha256(self.reference.encode()).hexdigest()


def check_photo(photo: PhotoFaces) -> None:
    """Refuse a photo the gallery could not store: an empty or overlong reference, a key that is not a sha256,
    a quality outside [0, 1], a box that is not four finite numbers."""
    if not isinstance(photo.reference, str) or not photo.reference.strip() or len(photo.reference) > MAX_REFERENCE:
        raise GhostFaceNetsError(f"a photo reference must be 1-{MAX_REFERENCE} characters, got {photo.reference!r}")
    key = photo.photo_key
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise GhostFaceNetsError(f"{photo.reference}: the photo key must be a sha256 in 64 lowercase hex digits")
    for face in photo.faces:
        if not 0.0 <= float(face.quality) <= 1.0:
            raise GhostFaceNetsError(f"{photo.reference}: face quality must lie in [0, 1], got {face.quality}")
        if face.box is not None:
            box = np.asarray(face.box, np.float64)
            if box.shape != (4,) or not np.all(np.isfinite(box)):
                raise GhostFaceNetsError(f"{photo.reference}: a box is four finite numbers x1, y1, x2, y2")


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
    reference_norm: float,
    quality: QualityModel = DEFAULT_QUALITY,
) -> tuple[np.ndarray, list[QualityParts], list[float]]:
    """Embeddings, quality parts and quality scores of aligned ``crops`` (N, 112, 112, 3), each with the detected
    :class:`~ghostfacenets.pipeline.detect.Face` it came from (None for a crop given as is)."""
    embeddings, raw, mirrored = embed_crops(recognizer, crops)
    parts = [
        quality_parts(
            crop,
            raw_vector,
            reference_norm,
            mirrored=mirror if recognizer.flip else None,
            detector=None if face is None else face.score,
            landmarks=None if face is None else face.landmarks,
        )
        for crop, raw_vector, mirror, face in zip(crops, raw, mirrored, faces)
    ]
    return embeddings, parts, [quality.score(p) for p in parts]


def embed_photo_faces(
    recognizer: FaceRecognizer,
    pixels: np.ndarray,
    reference: str,
    reference_norm: float,
    *,
    key: str | None = None,
    store_crops: bool = False,
    quality: QualityModel = DEFAULT_QUALITY,
) -> PhotoFaces:
    """Every face of one decoded photo (uint8 RGB), detected, aligned, embedded and scored for quality."""
    from ..data.align import align_face

    found = recognizer.detect(pixels)
    crops = np.stack([align_face(pixels, f.landmarks) for f in found]) if found else np.zeros((0, 112, 112, 3))
    embeddings, parts, scores = describe_faces(recognizer, crops.astype(np.uint8), found, reference_norm, quality)
    faces = [
        UnlabelledFace(
            embedding=vector,
            quality=score,
            box=[round(float(v), 2) for v in face.box],
            detection={**face.to_dict(), "quality": part.to_dict()},
            crop=encode_png(crop) if store_crops else None,
        )
        for face, crop, vector, part, score in zip(found, crops.astype(np.uint8), embeddings, parts, scores)
    ]
    return PhotoFaces(reference, faces, key)
