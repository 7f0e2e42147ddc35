"""Following faces between detections: pyramidal Lucas-Kanade optical flow (OpenCV) on a grid of points in each
face and its five landmarks, kept only where the flow back from the new frame returns to the start (the
forward-backward check of Kalal et al.'s Median Flow), then the face's grey patch compared with its look at the
last detection (normalised cross-correlation), so that a face which left or was covered is not followed onto the
background.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORK_SIDE = 640  # frames are followed at most this large (longer side): enough for faces, cheap for 1080p
_GRID = 5  # points per side of each face's grid
_PATCH = 24  # side of the grey patch compared with the last detection's
_LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)


@dataclass(frozen=True)
class Motion:
    """Where a face went: its new ``box`` and ``landmarks`` (frame pixels), or ``box`` None when it was lost."""

    box: np.ndarray | None
    landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class GreyFrame:
    """A frame in grey at the working size, and the factor from frame pixels to it."""

    pixels: np.ndarray
    scale: float


def grey_frame(rgb: np.ndarray) -> GreyFrame:
    """``rgb`` in grey, shrunk to at most :data:`WORK_SIDE` on its longer side."""
    scale = min(1.0, WORK_SIDE / max(rgb.shape[:2]))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return GreyFrame(grey, scale)


def face_patch(frame: GreyFrame, box: np.ndarray) -> np.ndarray | None:
    """The face box's grey patch at :data:`_PATCH` pixels square (None when the box lies outside the frame)."""
    x1, y1, x2, y2 = (np.asarray(box, np.float64) * frame.scale).round().astype(int)
    h, w = frame.pixels.shape
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    return cv2.resize(frame.pixels[y1:y2, x1:x2], (_PATCH, _PATCH), interpolation=cv2.INTER_AREA)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float32) - a.mean()
    b = b.astype(np.float32) - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 1e-6 else 0.0


def _lucas_kanade(before: np.ndarray, after: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, ...]:
    found = cv2.calcOpticalFlowPyrLK(
        before,
        after,
        points,
        None,
        winSize=(15, 15),
        maxLevel=3,
        criteria=_LK_CRITERIA,
    )
    return tuple(np.asarray(x) for x in found)


def follow(
    previous: GreyFrame,
    current: GreyFrame,
    faces: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    max_error: float = 1.0,
    min_kept: float = 0.5,
    min_similarity: float = 0.5,
) -> list[Motion]:
    """Where each face (box, landmarks, grey patch at its last detection or None) of ``previous`` is in
    ``current``: points whose forward-backward error exceeds ``max_error`` working pixels are dropped; a face with
    fewer than ``min_kept`` of its points left, or whose new patch correlates less than ``min_similarity`` with its
    patch, is lost."""
    if not faces:
        return []
    points, owners = [], []
    for i, (box, landmarks, _) in enumerate(faces):
        x1, y1, x2, y2 = np.asarray(box, np.float64)
        xs = np.linspace(x1 + 0.15 * (x2 - x1), x2 - 0.15 * (x2 - x1), _GRID)
        ys = np.linspace(y1 + 0.15 * (y2 - y1), y2 - 0.15 * (y2 - y1), _GRID)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        chosen = np.vstack([grid, np.asarray(landmarks, np.float64)])
        points.append(chosen)
        owners.append(np.full(len(chosen), i))
    start = (np.vstack(points) * previous.scale).astype(np.float32).reshape(-1, 1, 2)
    owner = np.concatenate(owners)
    ahead, status, _ = _lucas_kanade(previous.pixels, current.pixels, start)
    back, status_back, _ = _lucas_kanade(current.pixels, previous.pixels, ahead)
    error = np.linalg.norm((back - start).reshape(-1, 2), axis=1)
    good = (status.reshape(-1) == 1) & (status_back.reshape(-1) == 1) & (error < max_error)
    before, after = start.reshape(-1, 2) / previous.scale, ahead.reshape(-1, 2) / current.scale
    moves = []
    for i, (box, landmarks, patch) in enumerate(faces):
        mine = (owner == i) & good
        if mine.sum() < max(3, min_kept * (owner == i).sum()):
            moves.append(Motion(None))
            continue
        a, b = before[mine], after[mine]
        shift = np.median(b - a, axis=0)
        spread_a = np.linalg.norm(a[:, None] - a[None], axis=-1)
        spread_b = np.linalg.norm(b[:, None] - b[None], axis=-1)
        pairs = spread_a > 1e-3
        scale = float(np.median(spread_b[pairs] / spread_a[pairs])) if pairs.any() else 1.0
        box = np.asarray(box, np.float64)
        centre = (box[:2] + box[2:]) / 2
        moved_centre = centre + shift
        half = (box[2:] - box[:2]) / 2 * scale
        new_box = np.concatenate([moved_centre - half, moved_centre + half])
        new_landmarks = moved_centre + (np.asarray(landmarks, np.float64) - centre) * scale
        if patch is not None:
            seen = face_patch(current, new_box)
            if seen is None or _ncc(seen, patch) < min_similarity:
                moves.append(Motion(None))
                continue
        moves.append(Motion(new_box.astype(np.float32), new_landmarks.astype(np.float32)))
    return moves
