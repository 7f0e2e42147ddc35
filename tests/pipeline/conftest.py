"""Fixtures of the pipeline tests: a small GhostFaceNet with non-trivial (random) weights and real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import shared_path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official Keras GhostFaceNetV1-1-2 test model (random weights) in the package's own format."""
    h5 = shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5")
    from ghostfacenets.model_io import convert_keras

    return convert_keras(h5, tmp_path_factory.mktemp("model") / "v1_w1_s2.safetensors")


@pytest.fixture(scope="session")
def recognizer(model_file: Path):
    from ghostfacenets.pipeline import FaceRecognizer

    return FaceRecognizer(model_file, device="cpu")


@pytest.fixture(scope="session")
def blank_image() -> np.ndarray:
    """A smooth grey gradient: no face."""
    ramp = np.linspace(60, 200, 320, dtype=np.float32)
    return np.repeat(np.add.outer(ramp[:240] * 0.5, ramp * 0.5)[..., None], 3, axis=2).astype(np.uint8)


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Batch-1 inference gains nothing from threads, and on a loaded shared machine two OpenMP threads can run a
    100x slower than one; restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
