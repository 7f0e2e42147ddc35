"""Synthetic "faces" for evaluation tests: a smooth random colour pattern per identity, drawn in the aligned
112x112 frame, that the pooled-colour toy models tell apart; and loose crops of it with their five landmarks."""

from __future__ import annotations

import cv2
import numpy as np

from ghostfacenets.data.transforms import ARCFACE_TEMPLATE


def identity_pattern(rng: np.random.Generator) -> np.ndarray:
    """An aligned 112x112 RGB crop: a 6x6 random colour grid smoothed up to 112x112."""
    small = rng.integers(0, 256, (6, 6, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def another_image(pattern: np.ndarray, rng: np.random.Generator, noise: float = 30.0) -> np.ndarray:
    """The pattern with Gaussian pixel noise: another image of the same identity."""
    return np.clip(pattern + rng.normal(0, noise, pattern.shape), 0, 255).astype(np.uint8)


def loose_crop(pattern: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The pattern under a random similarity transform in a larger image, and where its five ArcFace template
    points landed (so aligning by them recovers the pattern)."""
    angle, scale = rng.uniform(-25, 25), rng.uniform(0.9, 1.6)
    size = int(rng.integers(170, 230))
    matrix = cv2.getRotationMatrix2D((56.0, 56.0), angle, scale)
    matrix[:, 2] += (size / 2 - 56.0) + rng.uniform(-10, 10, 2)
    crop = cv2.warpAffine(pattern, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=(90, 90, 90))
    landmarks = ARCFACE_TEMPLATE.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return crop, landmarks
