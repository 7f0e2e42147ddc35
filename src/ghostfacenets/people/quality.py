"""How usable a face is for recognition: a score in [0, 1] from what the pipeline already has.

The parts (:class:`QualityParts`), each measured on every face:

* ``detector``: RetinaFace's face probability (non-faces and half-faces score low);
* ``size``: the side, in photo pixels, of the square the aligned 112x112 crop was taken from (a 20-pixel face is
  upscaled five times);
* ``pose``: how far the five landmarks are from the ArcFace template after the best similarity fit (RMS, in crop
  pixels): large for turned heads and for landmark sets that are not a face;
* ``sharpness``: log10 of the variance of the Laplacian over the crop's centre (blur, heavy compression);
* ``norm``: the GhostFaceNet's own embedding norm before L2 normalisation, relative to the model's typical norm;
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

PARTS = ("detector", "size", "pose", "sharpness", "norm", "flip")


@dataclass(frozen=True)
class QualityParts:
    """The measurements behind a face's quality (None where the face has no detection: an aligned crop)."""

    sharpness: float
    norm: float  # raw embedding norm divided by the model's reference norm
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
        "norm": Ramp(0.5, 1.0),
        "flip": Ramp(0.6, 0.9),
    }


@dataclass(frozen=True)
class QualityModel:
    """Parts -> one score in [0, 1]: the weighted geometric mean of the parts' ramps (parts a face lacks, such as
    the detector's for an aligned crop, are left out). A part at 0 makes the score 0."""

    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 1.0))
    ramps: dict[str, Ramp] = field(default_factory=_default_ramps)

    def score(self, parts: QualityParts) -> float:
        total = weight = 0.0
        for name, w in self.weights.items():
            value = getattr(parts, name)
            if value is None or w == 0:
                continue
            level = self.ramps[name](value)
            if level <= 0.0:
                return 0.0
            total += w * math.log(level)
            weight += w
        return float(math.exp(total / weight)) if weight else 1.0


DEFAULT_QUALITY = QualityModel()


def sharpness(crop: np.ndarray) -> float:
    """log10(1 + variance of the Laplacian) over the centre of an aligned 112x112 crop (eyes to mouth)."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    centre = grey[28:100, 24:88].astype(np.float32)
    return float(math.log10(1.0 + cv2.Laplacian(centre, cv2.CV_32F, ksize=3).var()))


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
    reference_norm: float,
    *,
    mirrored: np.ndarray | None = None,
    detector: float | None = None,
    landmarks: np.ndarray | None = None,
) -> QualityParts:
    """The parts of one face: its aligned ``crop``; ``raw``, its embedding before L2 normalisation (with flip
    test-time augmentation: the sum of the crop's and its mirror's, ``mirrored`` being the mirror's alone); the
    model's ``reference_norm`` (:func:`reference_norm`); the detector's score and landmarks when it was detected."""
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
        norm=float(np.linalg.norm(raw) / reference_norm),
        flip=flip,
        detector=None if detector is None else float(detector),
        size=size,
        pose=pose,
    )


def reference_norm(raw_norms: np.ndarray) -> float:
    """A model's typical embedding norm: the median over a set of faces (those of the first photos it embeds for
    a gallery, or of an evaluation set), which :func:`quality_parts` divides by."""
    norms = np.asarray(raw_norms, np.float64)
    norms = norms[np.isfinite(norms) & (norms > 0)]
    if not len(norms):
        raise ValueError("no embedding norms to take a reference from")
    return float(np.median(norms))
