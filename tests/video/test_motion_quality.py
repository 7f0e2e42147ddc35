"""Optical flow between detections against known motions of a real face, and the sighting quality's factors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ghostfacenets.data.align import align_face
from ghostfacenets.data.images import load_image
from ghostfacenets.data.transforms import ARCFACE_TEMPLATE
from ghostfacenets.pipeline.detect import Face
from ghostfacenets.video.motion import face_patch, follow, grey_frame
from ghostfacenets.video.quality import clear_factor, face_quality, pose_factor, sharpness_factor
from tests.helpers.photos import photo
from tests.helpers.videos import background, paste


@pytest.fixture(scope="module")
def face_photo() -> tuple[np.ndarray, Face]:
    from ghostfacenets.pipeline.detect import RetinaFaceDetector

    image = load_image(photo("img5.jpg"))  # 330x512, one face about 185 pixels wide
    return image, RetinaFaceDetector().detect(image)[0]


def moved(image: np.ndarray, shift: tuple[float, float], scale: float, centre: np.ndarray) -> np.ndarray:
    """``image`` scaled by ``scale`` about ``centre`` and shifted: where every point goes is known."""
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), 0.0, scale)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize(("shift", "scale"), [((7.3, -4.1), 1.0), ((-12.0, 6.5), 1.06), ((3.0, 2.0), 0.95)])
def test_follow_finds_a_known_motion(face_photo: tuple[np.ndarray, Face], shift, scale: float) -> None:
    image, face = face_photo
    centre = (face.box[:2] + face.box[2:]) / 2
    before, after = grey_frame(image), grey_frame(moved(image, shift, scale, centre))
    (motion,) = follow(before, after, [(face.box, face.landmarks, face_patch(before, face.box))])
    assert motion.box is not None and motion.landmarks is not None
    expected_box = np.concatenate(
        [centre + shift - (centre - face.box[:2]) * scale, centre + shift + (face.box[2:] - centre) * scale]
    )
    np.testing.assert_allclose(motion.box, expected_box, atol=1.5)
    expected_landmarks = centre + shift + (face.landmarks - centre) * scale
    np.testing.assert_allclose(motion.landmarks, expected_landmarks, atol=1.5)


def test_follow_loses_a_face_that_left(face_photo: tuple[np.ndarray, Face]) -> None:
    """The face pasted on a still background, then gone: the flow may settle on the background, the patch does
    not match the face."""
    image, face = face_photo
    x1, y1, x2, y2 = face.box.round().astype(int)
    sprite = np.dstack([image[y1:y2, x1:x2], np.full((y2 - y1, x2 - x1), 255, np.uint8)])
    still = background(480, 360, seed=3)
    shown = still.copy()
    paste(shown, sprite, (200.0, 180.0))
    box = np.array([200 - (x2 - x1) / 2, 180 - (y2 - y1) / 2, 200 + (x2 - x1) / 2, 180 + (y2 - y1) / 2])
    landmarks = face.landmarks - face.box[:2] + box[:2]
    before = grey_frame(shown)
    (gone,) = follow(before, grey_frame(still), [(box, landmarks, face_patch(before, box))])
    assert gone.box is None
    (kept,) = follow(before, grey_frame(shown), [(box, landmarks, face_patch(before, box))])
    assert kept.box is not None


def test_sharpness_pose_and_cover(face_photo: tuple[np.ndarray, Face]) -> None:
    image, face = face_photo
    crop = align_face(image, face.landmarks)
    blurred = cv2.GaussianBlur(crop, (0, 0), 2.5)
    assert sharpness_factor(blurred) < 0.5 * sharpness_factor(crop)
    assert pose_factor(ARCFACE_TEMPLATE) == pytest.approx(1.0, abs=0.05)  # the template is a frontal face
    turned = ARCFACE_TEMPLATE.copy()
    turned[2, 0] = turned[1, 0]  # the nose under the right eye: a head turned far
    assert pose_factor(turned) < 0.2
    beside = Face(face.box + np.array([500, 0, 500, 0]), face.score, face.landmarks)
    half_covering = Face(face.box + np.array([face.width / 2, 0, face.width / 2, 0]), face.score, face.landmarks)
    assert clear_factor(face, [face, beside]) == 1.0
    assert clear_factor(face, [half_covering]) == pytest.approx(0.0, abs=0.02)
    small = Face(face.box / 4, face.score, face.landmarks / 4)
    assert face_quality(face, crop) > face_quality(face, blurred)
    assert face_quality(face, crop) > face_quality(small, crop)
    assert face_quality(face, crop) > face_quality(face, crop, [face, half_covering])
    assert 0.0 < face_quality(face, crop) <= 1.0
