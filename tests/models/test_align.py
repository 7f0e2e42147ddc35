"""The alignment module that lives inside the pipeline files against ghostfacenets.data.align.align_face (OpenCV):
the same crops on real photos, rotated faces, faces at the border; the mirrored crop is the crop mirrored."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ghostfacenets.data.align import align_face, estimate_transform
from ghostfacenets.data.images import load_image
from ghostfacenets.data.transforms import ARCFACE_TEMPLATE
from ghostfacenets.models.align import SimilarityAlign
from ghostfacenets.pipeline.detect import RetinaFaceDetector
from tests.helpers.photos import photo


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return RetinaFaceDetector(backend="onnxruntime")


def _crops(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    module = SimilarityAlign(mirrored=True)
    with torch.no_grad():
        return module(torch.from_numpy(image[None]), torch.from_numpy(landmarks[None].astype(np.float32))).numpy()


def _check(image: np.ndarray, landmarks: np.ndarray) -> None:
    """Whole grey levels equal to OpenCV's, but for rounding ties (at most 0.1 % of the values, off by one)."""
    expected = align_face(image, landmarks).astype(np.float32)
    crop, mirrored = _crops(image, landmarks)
    difference = np.abs(crop - expected)
    assert difference.max() <= 1 and (difference > 0).mean() <= 1e-3
    np.testing.assert_array_equal(mirrored, crop[:, ::-1])
    np.testing.assert_array_equal(crop, np.round(crop))


@pytest.mark.parametrize("name", ["img1.jpg", "img3.jpg", "img12.jpg", "img22.jpg"])
def test_crops_match_opencv_on_real_photos(detector: RetinaFaceDetector, name: str) -> None:
    image = load_image(photo(name))
    _check(image, detector.detect(image)[0].landmarks)


@pytest.mark.parametrize("angle", [-40, 25, 90])
def test_rotated_faces(detector: RetinaFaceDetector, angle: float) -> None:
    image = load_image(photo("img10.jpg"))
    landmarks = detector.detect(image)[0].landmarks
    centre = tuple(float(c) for c in landmarks.mean(0))
    rotation = cv2.getRotationMatrix2D(centre, angle, 1.0)
    rotated = cv2.warpAffine(image, rotation, (image.shape[1], image.shape[0]))
    _check(rotated, landmarks @ rotation[:, :2].T + rotation[:, 2])


def test_faces_cut_by_the_border_and_the_transform() -> None:
    image = load_image(photo("img5.jpg"))
    template = ARCFACE_TEMPLATE.astype(np.float64)
    for shift in ([-60, -70], [image.shape[1] - 50, 10], [5, image.shape[0] - 40]):
        landmarks = template * 2.0 + shift  # partly outside the photo: black there, as OpenCV
        _check(image, landmarks)
    matrix = estimate_transform(template * 2.0 + 30)
    np.testing.assert_allclose(matrix[:, :2], [[0.5, 0.0], [0.0, 0.5]], atol=1e-6)  # the closed form's reference
