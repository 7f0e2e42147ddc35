"""How usable one sighting of a face is for recognition, from what detection and alignment already give: the
detector's score, the face's size, how frontal its five landmarks are, how sharp its aligned crop is, and how much
of it another face in the frame covers (two people crossing: the crop holds parts of both).

Each factor lies in [0, 1] and the quality is their product, so a face that fails on any count ranks low. A track's
identity is decided from the embeddings of its best-quality sightings (``TrackerSettings.best_faces``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..data.transforms import ARCFACE_TEMPLATE
from ..pipeline.detect import Face

FULL_SIZE = 80.0  # pixels on the face box's shorter side from which size no longer limits the quality
SHARP_LAPLACIAN = 150.0  # variance of the aligned crop's Laplacian from which sharpness no longer limits it


def _nose_position(points: np.ndarray) -> tuple[float, float]:
    """(across, along): the nose's offset from the line through the eyes' and the mouth's middles, and its place
    along that line (0 at the eyes, 1 at the mouth), in units of the face's size."""
    points = np.asarray(points, dtype=np.float64)
    eyes, nose, mouth = (points[0] + points[1]) / 2, points[2], (points[3] + points[4]) / 2
    axis = mouth - eyes
    length = float(np.hypot(*axis))
    eye_span = float(np.hypot(*(points[1] - points[0])))
    scale = max(length, eye_span, 1e-6)
    if length < 1e-6:
        return math.inf, math.inf
    unit = axis / length
    offset = nose - eyes
    return abs(float(offset[0] * unit[1] - offset[1] * unit[0])) / scale, float(offset @ unit) / length


_FRONTAL_ALONG = _nose_position(ARCFACE_TEMPLATE)[1]  # the template is a frontal face


def pose_factor(landmarks: np.ndarray) -> float:
    """1 for a frontal face (the ArcFace template's geometry), falling to 0 as the head turns or tilts far: the
    nose's offset from the midline of the eyes and mouth (yaw; about 0.5 of the face's size in profile) and its
    height between them (pitch), relative to the face's own scale."""
    across, along = _nose_position(landmarks)
    yaw = max(0.0, 1.0 - across / 0.45)
    pitch = max(0.0, 1.0 - abs(along - _FRONTAL_ALONG) / 0.4)
    return yaw * pitch


def sharpness_factor(crop: np.ndarray) -> float:
    """1 for a sharp aligned crop, lower for a blurred one: the variance of its grey Laplacian, saturating at
    :data:`SHARP_LAPLACIAN`."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    variance = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    return min(1.0, variance / SHARP_LAPLACIAN)


def clear_factor(face: Face, others: list[Face]) -> float:
    """1 for a face no other face's box overlaps, falling to 0 when half of its box is covered by another's."""
    covered = 0.0
    area = max(face.area, 1e-6)
    for other in others:
        if other is face:
            continue
        w = min(face.box[2], other.box[2]) - max(face.box[0], other.box[0])
        h = min(face.box[3], other.box[3]) - max(face.box[1], other.box[1])
        if w > 0 and h > 0:
            covered = max(covered, float(w * h) / area)
    return max(0.0, 1.0 - 2.0 * covered)


def face_quality(face: Face, crop: np.ndarray, others: list[Face] | None = None) -> float:
    """The quality in [0, 1] of ``face`` with its aligned 112x112 ``crop``, among the ``others`` faces of its frame:
    detector score x size x pose x sharpness x clear of other faces."""
    size = min(1.0, max(0.0, min(face.width, face.height) / FULL_SIZE))
    score = float(np.clip(face.score, 0.0, 1.0))
    return score * size * pose_factor(face.landmarks) * sharpness_factor(crop) * clear_factor(face, others or [])
