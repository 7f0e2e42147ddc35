"""The patches the liveness networks see: the face box scaled about its centre, kept inside the image, resized to
80x80. The geometry is Silent-Face-Anti-Spoofing's ``CropImage`` (src/generate_patches.py), step for step, since the
networks were trained on exactly these patches (the tests compare both, at the image borders too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..models.minifasnet import INPUT_SIZE


def reference_box(box: Any) -> tuple[int, int, int, int]:
    """A detector box (x1, y1, x2, y2) in pixels, or a face with a ``box``, as the reference's ``[x, y, w, h]``:
    ``int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1)`` (its ``Detection.get_bbox``)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(getattr(box, "box", box), dtype=np.float64).reshape(4))
    return int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1)


def patch_box(width: int, height: int, box: Sequence[int], scale: float) -> tuple[int, int, int, int]:
    """Inclusive corners (left, top, right, bottom) of the patch at ``scale`` times the ``[x, y, w, h]`` box in an
    image of ``width`` x ``height``: the scale shrinks until the patch fits, then the patch is shifted inside."""
    x, y, box_w, box_h = box
    if box_w <= 0 or box_h <= 0:
        raise ValueError(f"a face box needs a positive width and height, got {box_w}x{box_h}")
    scale = min((height - 1) / box_h, min((width - 1) / box_w, scale))
    new_w, new_h = box_w * scale, box_h * scale
    centre_x, centre_y = box_w / 2 + x, box_h / 2 + y
    left, top = centre_x - new_w / 2, centre_y - new_h / 2
    right, bottom = centre_x + new_w / 2, centre_y + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > width - 1:
        left -= right - width + 1
        right = width - 1
    if bottom > height - 1:
        top -= bottom - height + 1
        bottom = height - 1
    return int(left), int(top), int(right), int(bottom)


def crop_patch(image: np.ndarray, box: Sequence[int], scale: float, size: int = INPUT_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` patch at ``scale`` of the ``[x, y, w, h]`` box, in the image's channel order."""
    height, width = image.shape[:2]
    left, top, right, bottom = patch_box(width, height, box, scale)
    return cv2.resize(image[top : bottom + 1, left : right + 1], (size, size))


def liveness_patches(image_rgb: np.ndarray, boxes: Sequence[Any], scales: Sequence[float]) -> list[np.ndarray]:
    """For each scale, the patches of every box (or face) as uint8 BGR (N, 80, 80, 3), from a uint8 RGB image (the
    networks take BGR, as OpenCV reads photos)."""
    refs = [reference_box(b) for b in boxes]
    out = []
    for scale in scales:
        patches = [crop_patch(image_rgb, ref, scale)[..., ::-1] for ref in refs]
        out.append(
            np.ascontiguousarray(np.stack(patches)) if patches else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        )
    return out
