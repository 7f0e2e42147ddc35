"""Fixtures of the liveness tests: the reference predictor built from the vendored repository files, the package's
checker, real photos with their faces, and a small labelled presentation-attack set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.liveness import SAMPLES, ReferencePredictor
from tests.helpers.photos import photo

# A fixed choice of the shared photos (not chosen by score): live faces of the labelled set.
LIVE_PHOTOS = ("img1.jpg", "img2.jpg", "img5.jpg", "img10.jpg", "img13.jpg")


@pytest.fixture(scope="session")
def reference() -> ReferencePredictor:
    return ReferencePredictor()


@pytest.fixture(scope="session")
def eager_checker():
    from ghostfacenets.liveness import LivenessChecker

    return LivenessChecker(backend="eager")


@pytest.fixture(scope="session")
def detector():
    from ghostfacenets.pipeline.detect import RetinaFaceDetector

    return RetinaFaceDetector()


@pytest.fixture(scope="session")
def pad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """live/: the repository's live sample and shared photos; attack/print and attack/replay: its two attack samples
    (a poster and a tablet screen)."""
    root = tmp_path_factory.mktemp("pad") / "pad_set"
    (root / "live").mkdir(parents=True)
    (root / "attack" / "print").mkdir(parents=True)
    (root / "attack" / "replay").mkdir(parents=True)
    shutil.copy(SAMPLES / "image_T1.jpg", root / "live")
    for name in LIVE_PHOTOS:
        shutil.copy(photo(name), root / "live")
    shutil.copy(SAMPLES / "image_F1.jpg", root / "attack" / "print")
    shutil.copy(SAMPLES / "image_F2.jpg", root / "attack" / "replay")
    return root


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Batch-1 inference of 80x80 networks gains nothing from threads, and on a loaded shared machine two OpenMP
    threads can run many times slower than one; restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
