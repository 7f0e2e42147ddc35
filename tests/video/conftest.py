"""Fixtures of the video tests: the scripted door video made from the shared photos, a small GhostFaceNet (the
official code's test model, random weights) and a gallery of the people in the video."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import require_module, shared_path
from tests.helpers.photos import photo
from tests.helpers.videos import DOOR_SCRIPT, PEOPLE, render

DISTRACTORS = ("img2.jpg", "img8.jpg", "img18.jpg", "img20.jpg", "img22.jpg", "img24.jpg")


@pytest.fixture(autouse=True)
def _video_extra() -> None:
    require_module("av", "video")
    require_module("scipy", "video")


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Batch-1 inference gains nothing from threads on the shared 2-core machine; restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def door_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DOOR_SCRIPT as an H.264 MP4 (640x480, 25 fps, 10.4 s)."""
    require_module("av", "video")
    return render(DOOR_SCRIPT, tmp_path_factory.mktemp("videos") / "door.mp4")


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official Keras GhostFaceNetV1-1-2 test model (random weights) as an ONNX file: it loads at once (no
    export in every process that opens it) and runs fast on onnxruntime."""
    require_module("onnx", "onnx")
    h5 = shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5")
    from ghostfacenets.export.onnx import export_onnx
    from ghostfacenets.model_io import convert_keras, load_model

    folder = tmp_path_factory.mktemp("model")
    return export_onnx(load_model(convert_keras(h5, folder / "v1_w1_s2.safetensors")), folder / "v1_w1_s2.onnx")


@pytest.fixture(scope="session")
def recognizer(model_file: Path):
    from ghostfacenets.pipeline import FaceRecognizer

    return FaceRecognizer(model_file, device="cpu", score_threshold=0.6)


@pytest.fixture(scope="session")
def door_gallery(recognizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gallery of the four people of the door video, enrolled from their photos, and six people who are not in
    it."""
    db = tmp_path_factory.mktemp("gallery") / "people.sqlite"
    for name, image in PEOPLE.items():
        recognizer.enroll(db, name, photo(image))
    for image in DISTRACTORS:
        recognizer.enroll(db, f"other-{Path(image).stem}", photo(image))
    return db
