"""Quality parts against their definitions written out here, the score's combination, and the error-versus-reject
curve against a brute-force count."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from ghostfacenets.data.transforms import ARCFACE_TEMPLATE
from ghostfacenets.evaluate.metrics import threshold_at_far
from ghostfacenets.people.evaluation import error_versus_reject
from ghostfacenets.people.quality import QualityModel, QualityParts, Ramp, landmark_geometry, quality_parts


def _crop(rng: np.random.Generator, blur: float = 0.0, scale: float = 1.0) -> np.ndarray:
    crop = rng.integers(0, 256, (112, 112, 3)).astype(np.float32)
    if blur:
        crop = cv2.GaussianBlur(crop, (0, 0), blur)
    return np.clip(127 + (crop - 127) * scale, 0, 255).astype(np.uint8)


def test_sharpness_and_contrast_follow_their_definitions() -> None:
    rng = np.random.default_rng(0)
    crop = _crop(rng)
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[28:100, 24:88].astype(np.float64)
    kernel = np.array([[2, 0, 2], [0, -8, 0], [2, 0, 2]], np.float64)  # OpenCV's 3x3-aperture Laplacian
    laplacian = cv2.filter2D(grey, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    parts = quality_parts(crop, np.ones(8))
    assert parts.sharpness == pytest.approx(math.log10(1 + laplacian.var()), rel=1e-4)
    assert parts.contrast == pytest.approx(grey.std(), rel=1e-4)
    blurred = quality_parts(_crop(np.random.default_rng(0), blur=3), np.ones(8))
    dark = quality_parts(_crop(np.random.default_rng(0), scale=0.1), np.ones(8))
    assert blurred.sharpness < parts.sharpness - 1 and dark.contrast < parts.contrast / 5


def test_landmark_geometry_of_the_template_and_of_a_turned_face() -> None:
    template = ARCFACE_TEMPLATE.astype(np.float64)
    size, pose = landmark_geometry(template * 2 + 50)  # the template, twice as large, moved
    assert size == pytest.approx(224, rel=1e-3) and pose == pytest.approx(0, abs=1e-3)
    turned = template.copy()
    turned[2, 0] += 15  # the nose towards one cheek: no similarity transform fits it
    assert landmark_geometry(turned)[1] > 4


def test_flip_agreement_and_norm() -> None:
    own, mirror = np.array([1.0, 0, 0, 0]), np.array([0.6, 0.8, 0, 0])
    parts = quality_parts(np.zeros((112, 112, 3), np.uint8), own + mirror, mirrored=mirror, detector=0.95)
    assert parts.flip == pytest.approx(0.6) and parts.norm == pytest.approx(np.linalg.norm(own + mirror))
    assert parts.detector == 0.95 and parts.size is None and parts.pose is None


def test_the_score_is_a_weighted_product_of_ramps() -> None:
    parts = QualityParts(sharpness=1.5, contrast=16.0, norm=10.0, flip=0.9, detector=0.99, size=100, pose=9.0)
    model = QualityModel(weights={"sharpness": 1.0, "contrast": 2.0, "pose": 0.0, "norm": 1.0})
    assert model.score(parts) == pytest.approx(0.5 * 0.5**2)  # norm left out: no reference norm
    with_norm = QualityModel(weights={"norm": 1.0}, norm_reference=20.0)
    assert with_norm.score(parts) == pytest.approx(Ramp(0.5, 1.0)(0.5))  # 0: the norm is half the model's typical
    assert QualityModel().score(QualityParts(sharpness=0.5, contrast=50, norm=1)) == 0.0  # one part at 0 is enough
    assert QualityModel().score(QualityParts(sharpness=3, contrast=50, norm=1)) == 1.0  # a crop: no detector parts
    assert Ramp(6.0, 2.0)(4.0) == pytest.approx(0.5) and Ramp(6.0, 2.0)(1.0) == 1.0  # a falling ramp


def test_error_versus_reject_counts_as_defined() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 40)
    embeddings = rng.normal(size=(40, 8)) + 2 * np.eye(8)[labels % 8]
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    quality = rng.random(40)
    curve = error_versus_reject("q", labels, embeddings, quality, fmr=0.05, fractions=(0.0, 0.25, 0.5))
    for fraction, fnmr, left in zip(curve.fractions, curve.fnmr, curve.genuine_left):
        kept = np.argsort(quality, kind="stable")[int(fraction * 40) :]
        scores, same = [], []
        for a in range(40):
            for b in range(a + 1, 40):
                if a in kept and b in kept:
                    scores.append(float(embeddings[a] @ embeddings[b]))
                    same.append(labels[a] == labels[b])
        threshold, _ = threshold_at_far(np.array(scores), np.array(same), 0.05)
        genuine = np.array(scores)[np.array(same)]
        assert left == len(genuine) and fnmr == pytest.approx(np.mean(genuine <= threshold))
