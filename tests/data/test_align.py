"""Alignment: the similarity transform is the least-squares (Umeyama) one, and crops put landmarks on the template."""

from __future__ import annotations

import numpy as np
import pytest

from ghostfacenets.data.align import align_face, estimate_transform, transform_points
from ghostfacenets.data.transforms import ARCFACE_TEMPLATE
from tests.helpers.photos import photo


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent reference: Umeyama (1991) least-squares similarity, as skimage's SimilarityTransform."""
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    s, d = src - mu_src, dst - mu_dst
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / ((s**2).sum() / len(src))
    return np.hstack([scale * rotation, (mu_dst - scale * rotation @ mu_src)[:, None]])


def _random_landmarks(rng: np.random.Generator, noise: float) -> np.ndarray:
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 15)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (ARCFACE_TEMPLATE - 56) @ rotation.T * scale + rng.uniform(-200, 2000, 2)
    return points + rng.normal(0, noise * scale, (5, 2))


def test_exact_similarity_is_recovered_and_maps_landmarks_onto_template() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        points = _random_landmarks(rng, noise=0.0)
        mapped = transform_points(points, estimate_transform(points))
        np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE, atol=1e-3)


def test_noisy_landmarks_match_umeyama_least_squares() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        points = _random_landmarks(rng, noise=rng.uniform(0, 4))
        ours = transform_points(points, estimate_transform(points))
        reference = transform_points(points, umeyama_similarity(points, ARCFACE_TEMPLATE.astype(np.float64)))
        np.testing.assert_allclose(ours, reference, atol=0.01)  # pixels of the 112x112 crop


def test_matrix_is_a_similarity() -> None:
    matrix = estimate_transform(_random_landmarks(np.random.default_rng(3), noise=2))
    a, b = matrix[0, 0], matrix[1, 0]
    np.testing.assert_allclose(matrix[:, :2], [[a, -b], [b, a]], atol=1e-9)


def test_warped_pixels_land_on_the_template() -> None:
    """Bright dots drawn at the five landmarks of a rotated, scaled 'face' appear at the template points."""
    angle, scale = np.deg2rad(35.0), 1.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (ARCFACE_TEMPLATE - 56) @ rotation.T * scale + [310.0, 287.0]
    image = np.zeros((600, 600, 3), np.uint8)
    yy, xx = np.mgrid[:600, :600]
    for x, y in points:
        image[(xx - x) ** 2 + (yy - y) ** 2 <= 9] = 255
    crop = align_face(image, points).astype(np.float64)[..., 0]
    for tx, ty in ARCFACE_TEMPLATE:
        y0, x0 = round(ty) - 6, round(tx) - 6
        window = crop[y0 : y0 + 13, x0 : x0 + 13]
        wy, wx = np.mgrid[y0 : y0 + 13, x0 : x0 + 13]
        centre = np.array([(wx * window).sum(), (wy * window).sum()]) / window.sum()
        np.testing.assert_allclose(centre, [tx, ty], atol=0.35)


def test_bad_landmarks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        estimate_transform(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        estimate_transform(np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="coincide"):
        estimate_transform(np.ones((5, 2)))


def test_real_photos_aligned_crops_put_detected_landmarks_on_the_template() -> None:
    """On real photos: the detected landmarks map onto the template (up to the face's own shape), and detecting
    again in the aligned crop finds the landmarks where the transform put them (up to detector noise)."""
    from ghostfacenets.data.images import load_image
    from ghostfacenets.pipeline.detect import RetinaFaceDetector

    detector = RetinaFaceDetector()
    redetection_errors = []
    for name in ("img1.jpg", "img6.jpg", "img10.jpg", "img13.jpg", "img16.jpg", "img21.jpg", "img24.jpg"):
        image = load_image(photo(name))
        face = detector.detect(image)[0]
        matrix = estimate_transform(face.landmarks)
        mapped = transform_points(face.landmarks, matrix)
        assert np.sqrt(((mapped - ARCFACE_TEMPLATE) ** 2).sum(1).mean()) < 7.0, name
        canvas = np.zeros((224, 224, 3), np.uint8)
        canvas[56:168, 56:168] = align_face(image, face.landmarks)
        again = detector.detect(canvas)
        assert len(again) == 1, name
        redetection_errors.append(np.linalg.norm(again[0].landmarks - 56 - mapped, axis=1))
    errors = np.concatenate(redetection_errors)
    assert errors.mean() < 4.0 and errors.max() < 9.0, errors
