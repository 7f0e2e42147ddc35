"""The liveness patches against the reference's own CropImage (src/generate_patches.py), at the image borders too."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ghostfacenets.liveness.crop import crop_patch, liveness_patches, patch_box, reference_box
from tests.helpers.silent_face_reference.generate_patches import CropImage


def _boxes(width: int, height: int) -> list[list[int]]:
    """Boxes in the middle, against each border and corner, larger than the image allows at the scale, and tiny."""
    boxes = [[width // 3, height // 3, width // 4, height // 4], [0, 0, 5, 7], [width - 6, height - 8, 5, 7]]
    for x, y in itertools.product((0, 1, width // 2, width - 30, width - 21), (0, 2, height // 2, height - 40)):
        for w, h in ((20, 24), (max(1, width - x), max(1, height - y)), (width // 2, height // 3)):
            boxes.append([x, y, w, h])
    return boxes


@pytest.mark.parametrize(("width", "height"), [(480, 640), (641, 359), (90, 90)])
@pytest.mark.parametrize("scale", [2.7, 4.0, 1.0])
def test_patch_geometry_equals_the_reference(width: int, height: int, scale: float) -> None:
    for box in _boxes(width, height):
        assert patch_box(width, height, box, scale) == CropImage._get_new_box(width, height, box, scale), box


def test_patches_equal_the_reference_pixels() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (333, 251, 3), dtype=np.uint8)
    cropper = CropImage()
    for box, scale in itertools.product(_boxes(251, 333)[:12], (2.7, 4.0)):
        expected = cropper.crop(org_img=image, bbox=box, scale=scale, out_w=80, out_h=80, crop=True)
        np.testing.assert_array_equal(crop_patch(image, box, scale), expected)


def test_reference_box_and_patch_order() -> None:
    # Detection.get_bbox: [int(left), int(top), int(right - left + 1), int(bottom - top + 1)]
    assert reference_box([10.7, 20.2, 110.4, 180.9]) == (10, 20, 100, 161)
    rgb = np.random.default_rng(1).integers(0, 256, (200, 160, 3), dtype=np.uint8)
    bgr = rgb[..., ::-1].copy()
    box = [30.5, 40.2, 100.0, 130.0]
    first, second = liveness_patches(rgb, [box, box], [2.7, 4.0])
    assert first.shape == second.shape == (2, 80, 80, 3) and first.dtype == np.uint8
    cropper = CropImage()
    for patch, scale in ((first[0], 2.7), (second[1], 4.0)):  # BGR, as the reference crops the BGR image
        expected = cropper.crop(org_img=bgr, bbox=list(reference_box(box)), scale=scale, out_w=80, out_h=80)
        np.testing.assert_array_equal(patch, expected)
    assert liveness_patches(rgb, [], [2.7])[0].shape == (0, 80, 80, 3)
