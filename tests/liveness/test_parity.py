"""The package's liveness scores against the reference implementation on real photos: |difference| <= 1e-5 and the
same decision, for faces in the middle of photos and for faces cut by the image border."""

from __future__ import annotations

import numpy as np
import pytest

from ghostfacenets.liveness.crop import reference_box
from ghostfacenets.liveness.model import DEFAULT_THRESHOLD
from tests.helpers import shared_path
from tests.helpers.liveness import SAMPLE_LABELS, SAMPLES, read_bgr
from tests.helpers.photos import PHOTOS

TOLERANCE = 1e-5


def _photos() -> list:
    folder = shared_path(PHOTOS)
    return sorted(SAMPLES.glob("*.jpg")) + sorted(folder.glob("*.jpg"))


def _border_crops(bgr: np.ndarray, box: np.ndarray) -> list[np.ndarray]:
    """The photo cut so that the face's box touches (or passes) the left, top, right and bottom border."""
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = bgr.shape[:2]
    return [
        bgr[:, min(x1 + (x2 - x1) // 4, w - 1) :],
        bgr[min(y1 + 2, h - 1) :, :],
        bgr[:, : max(x2 - (x2 - x1) // 5, 1)],
        bgr[: max(y2 - 1, 1), :],
    ]


def test_scores_and_decisions_equal_the_reference(reference, eager_checker, detector) -> None:
    checked = worst = 0.0
    for index, path in enumerate(_photos()):
        bgr = read_bgr(path)
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        faces = sorted(detector.detect(rgb), key=lambda f: -f.area)
        assert faces, path
        images = [(bgr, faces[:3])]
        for cut in _border_crops(bgr, faces[0].box) if index % 2 == 0 else []:  # every other photo: four cuts
            cut_rgb = np.ascontiguousarray(cut[..., ::-1])
            images.append((np.ascontiguousarray(cut), detector.detect(cut_rgb)[:1]))
        for image, found in images:
            if not found:
                continue
            ours = eager_checker.scores(np.ascontiguousarray(image[..., ::-1]), found)
            for face, score in zip(found, ours):
                expected = reference.score(image, list(reference_box(face.box)))
                worst = max(worst, abs(score - expected))
                assert (score > DEFAULT_THRESHOLD) == (expected > DEFAULT_THRESHOLD), (path, score, expected)
                checked += 1
    assert checked >= 80 and worst <= TOLERANCE, (checked, worst)


@pytest.mark.parametrize("name", sorted(SAMPLE_LABELS))
def test_the_repository_samples_are_judged_as_labelled(name: str, eager_checker, detector) -> None:
    rgb = np.ascontiguousarray(read_bgr(SAMPLES / name)[..., ::-1])
    (result,) = eager_checker.check(rgb, detector.detect(rgb)[:1])
    assert result.is_live == SAMPLE_LABELS[name] and result.threshold.source == "default"
