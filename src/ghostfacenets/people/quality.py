"""How usable a face is for recognition: a score in [0, 1] from what the pipeline already has.

The parts (:class:`QualityParts`), each measured on every face:

* ``detector``: RetinaFace's face probability (non-faces and half-faces score low);
* ``size``: the side, in photo pixels, of the square the aligned 112x112 crop was taken from (a 20-pixel face is
  upscaled five times);
* ``pose``: how far the five landmarks are from the ArcFace template after the best similarity fit (RMS, in crop
  pixels): large for turned heads and for landmark sets that are not a face;
* ``sharpness``: log10 of the variance of the Laplacian over the crop's centre (blur, heavy compression);
* ``contrast``: the standard deviation of the grey levels over the crop's centre (dark, washed-out or flat faces,
  which GhostFaceNets map close to one another whoever they are);
* ``norm``: the GhostFaceNet's own embedding norm before L2 normalisation (in the model's units: the score divides it
  by ``QualityModel.norm_reference``, the model's typical norm);
* ``flip``: the cosine between the embeddings of the crop and of its mirror image (the flip test-time
  augmentation's two halves): a face the model reads consistently gives the same embedding both ways.

:class:`QualityModel` maps each part to [0, 1] with a linear ramp and combines them as a weighted geometric mean,
so one bad part pulls the score down. Which parts and ramps: measured by error-versus-reject curves on labelled
pairs (docs/people.md), and the defaults here are that measurement's result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from ..data.align import estimate_transform, transform_points
from ..data.transforms import ARCFACE_TEMPLATE, INPUT_SIZE

PARTS = ("detector", "size", "pose", "sharpness", "contrast", "norm", "flip")


@dataclass(frozen=True)
class QualityParts:
    """The measurements behind a face's quality (None where the face has no detection: an aligned crop)."""

    sharpness: float
    contrast: float
    norm: float  # the raw embedding's norm
    flip: float | None = None
    detector: float | None = None
    size: float | None = None
    pose: float | None = None

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QualityParts:
        return cls(**{k: float(values[k]) for k in PARTS if values.get(k) is not None})


@dataclass(frozen=True)
class Ramp:
    """0 at or below ``low``, 1 at or above ``high`` (reversed when ``high`` < ``low``), linear between."""

    low: float
    high: float

    def __call__(self, value: float) -> float:
        if self.high == self.low:
            return float(value >= self.high)
        return float(min(1.0, max(0.0, (value - self.low) / (self.high - self.low))))


def _default_ramps() -> dict[str, Ramp]:
    return {
        "detector": Ramp(0.90, 0.99),
        "size": Ramp(20.0, 64.0),
        "pose": Ramp(6.0, 2.0),
        "sharpness": Ramp(1.0, 2.0),
        "contrast": Ramp(8.0, 24.0),
        "norm": Ramp(0.5, 1.0),
        "flip": Ramp(0.6, 0.9),
    }


# Measured on the tuning set of docs/people.md (error-versus-reject curves of every combination): the detector's
# score, face size, sharpness, contrast and flip agreement; landmark pose and the embedding norm did not help there.
DEFAULT_WEIGHTS = {"detector": 1.0, "size": 1.0, "pose": 0.0, "sharpness": 1.0, "contrast": 1.0, "norm": 0.0,
                   "flip": 1.0}  # fmt: skip


@dataclass(frozen=True)
class QualityModel:
    """Parts -> one score in [0, 1]: the product of the parts' ramps, each raised to its weight (a weight of 0 leaves
    a part out, as do parts a face lacks, such as the detector's for an aligned crop). One bad part is enough to make
    the score low: a sharp, well-lit face of 20 pixels is still a poor face."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    ramps: dict[str, Ramp] = field(default_factory=_default_ramps)
    norm_reference: float | None = None  # the model's typical raw norm; None: the norm part is left out

    def score(self, parts: QualityParts) -> float:
        total = 0.0
        for name, weight in self.weights.items():
            value = getattr(parts, name)
            if name == "norm" and value is not None:
                value = value / self.norm_reference if self.norm_reference else None
            if value is None or weight == 0:
                continue
            level = self.ramps[name](value)
            if level <= 0.0:
                return 0.0
            total += weight * math.log(level)
        return float(math.exp(total))


DEFAULT_QUALITY = QualityModel()


def _centre(crop: np.ndarray) -> np.ndarray:
    """The grey levels of an aligned 112x112 crop's centre (eyes to mouth) as float32."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    return grey[28:100, 24:88].astype(np.float32)


def sharpness(crop: np.ndarray) -> float:
    """log10(1 + variance of the Laplacian, OpenCV's 3x3 aperture) over the centre of an aligned 112x112 crop."""
    return float(math.log10(1.0 + cv2.Laplacian(_centre(crop), cv2.CV_32F, ksize=3).var()))


def contrast(crop: np.ndarray) -> float:
    """Standard deviation of the grey levels (0-255) over the centre of an aligned 112x112 crop."""
    return float(_centre(crop).std())


def landmark_geometry(landmarks: np.ndarray) -> tuple[float, float]:
    """(size, pose) of a face from its five landmarks: the side in photo pixels of the square that becomes the
    112x112 crop, and the RMS distance in crop pixels between the landmarks mapped by the best similarity
    transform and the ArcFace template."""
    matrix = estimate_transform(landmarks)
    scale = math.hypot(matrix[0, 0], matrix[0, 1])
    misfit = transform_points(landmarks, matrix) - ARCFACE_TEMPLATE.astype(np.float64)
    return INPUT_SIZE / scale, float(np.sqrt(np.mean(np.sum(misfit**2, axis=1))))


def quality_parts(
    crop: np.ndarray,
    raw: np.ndarray,
    *,
    mirrored: np.ndarray | None = None,
    detector: float | None = None,
    landmarks: np.ndarray | None = None,
) -> QualityParts:
    """The parts of one face: its aligned ``crop``; ``raw``, its embedding before L2 normalisation (with flip
    test-time augmentation: the sum of the crop's and its mirror's, ``mirrored`` being the mirror's alone); the
    detector's score and landmarks when it was detected."""
    raw = np.asarray(raw, np.float64)
    flip = None
    if mirrored is not None:
        own = raw - np.asarray(mirrored, np.float64)
        flip = float(own @ mirrored / max(np.linalg.norm(own) * np.linalg.norm(mirrored), 1e-12))
    size = pose = None
    if landmarks is not None:
        size, pose = landmark_geometry(np.asarray(landmarks, np.float64))
    return QualityParts(
        sharpness=sharpness(crop),
        contrast=contrast(crop),
        norm=float(np.linalg.norm(raw)),
        flip=flip,
        detector=None if detector is None else float(detector),
        size=size,
        pose=pose,
    )


def reference_norm(raw_norms: np.ndarray) -> float:
    """A model's typical embedding norm: the median over a set of faces (:attr:`QualityModel.norm_reference`)."""
    norms = np.asarray(raw_norms, np.float64)
    norms = norms[np.isfinite(norms) & (norms > 0)]
    if not len(norms):
        raise ValueError("no embedding norms to take a reference from")
    return float(np.median(norms))
