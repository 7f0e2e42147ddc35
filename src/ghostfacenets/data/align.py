"""Five-point similarity alignment to the ArcFace 112x112 template, the crops every GhostFaceNet was trained on."""

from __future__ import annotations

import cv2
import numpy as np

from .transforms import ARCFACE_TEMPLATE, INPUT_SIZE


def _checked_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"expected five (x, y) landmarks shaped (5, 2), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks contain NaN or infinite values")
    return points


def estimate_transform(landmarks: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """2x3 similarity matrix (rotation, uniform scale, translation) mapping the five landmarks (left eye, right eye,
    nose, left and right mouth corner, image pixels) onto the ArcFace template scaled to ``size``.

    Least squares over all five points (what insightface's ``SimilarityTransform`` / Umeyama gives): OpenCV's
    estimator with every point an inlier and its Levenberg-Marquardt refinement.
    """
    points = _checked_landmarks(landmarks)
    template = ARCFACE_TEMPLATE.astype(np.float64) * (size / INPUT_SIZE)
    spread = float(np.ptp(points, axis=0).max())
    if spread < 1e-6:
        raise ValueError("the five landmarks coincide; no transform can be estimated")
    matrix, _ = cv2.estimateAffinePartial2D(
        points,
        template,
        method=cv2.RANSAC,
        ransacReprojThreshold=1e3 * spread * (1 + size / INPUT_SIZE),
        maxIters=1,
        confidence=0.5,
        refineIters=100,
    )
    if matrix is None:
        raise ValueError("no similarity transform fits these landmarks")
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``image`` (H, W, C) whose five ``landmarks`` land on the ArcFace template
    (bilinear sampling, black outside the image, as insightface's ``norm_crop``)."""
    matrix = estimate_transform(landmarks, size)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine ``matrix`` to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]
