"""Embedders of on-device files: ``.pte`` (ExecuTorch) and ``.tflite`` (LiteRT) embed as the PyTorch model does, flip
included, in batches of any size; wrong backends, devices and files are one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ghostfacenets.errors import GhostFaceNetsError, ModelFileError
from ghostfacenets.inference import TorchEmbedder, embed_images, load_embedder
from ghostfacenets.models.registry import create_model
from tests.helpers import require_module
from tests.helpers.models import randomized


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomized(create_model("ghostfacenetv1-0.5-2", embedding_size=32))
    model.metadata = {"thresholds": [{"far": 0.01, "threshold": 0.3, "set": "calibration pairs"}]}
    return model


@pytest.fixture(scope="module")
def files(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_module("executorch.runtime", "mobile")
    require_module("litert_torch", "mobile")
    from ghostfacenets.export.executorch import export_executorch
    from ghostfacenets.export.litert import export_litert

    folder = tmp_path_factory.mktemp("mobile_files")
    return {
        "pte": export_executorch(model, folder / "m.pte", max_batch=4),
        "tflite": export_litert(model, folder / "m.tflite"),
    }


@pytest.mark.parametrize("kind", ["pte", "tflite"])
def test_files_embed_as_pytorch_with_flip(model: torch.nn.Module, files: dict[str, Path], kind: str) -> None:
    from ghostfacenets.inference.mobile import ExecuTorchEmbedder, LiteRTEmbedder

    embedder = load_embedder(files[kind])
    assert isinstance(embedder, ExecuTorchEmbedder if kind == "pte" else LiteRTEmbedder)
    assert embedder.input_size == (112, 112) and embedder.embedding_size == 32
    crops = np.random.default_rng(1).integers(0, 256, (7, 112, 112, 3), dtype=np.uint8)  # 7: not a multiple of 4
    reference = TorchEmbedder(model)
    for flip in (False, True):
        out = embed_images(embedder, crops, batch_size=7, flip=flip, progress=False).astype(np.float64)
        expected = embed_images(reference, crops, flip=flip, progress=False).astype(np.float64)
        cosine = np.sum(out * expected, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosine.min() >= 0.9999
        assert np.abs(out - expected).max() <= 1e-3 * np.abs(expected).max()


@pytest.mark.parametrize("kind", ["pte", "tflite"])
def test_the_recognizer_runs_the_files_with_their_metadata(
    model: torch.nn.Module, files: dict[str, Path], kind: str
) -> None:
    """``FaceRecognizer`` (and so verify, enroll, identify and embed) takes the files as it takes ONNX ones: same
    embeddings as the PyTorch model, the file's metadata, its calibrated threshold."""
    from ghostfacenets.pipeline.recognizer import FaceRecognizer

    recognizer, reference = FaceRecognizer(files[kind]), FaceRecognizer(model, device="cpu", backend="eager")
    crops = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    assert np.sum(recognizer.embed_aligned(crops) * reference.embed_aligned(crops), axis=1).min() >= 0.9999
    assert recognizer.metadata["architecture"] == "ghostfacenetv1-0.5-2"
    assert recognizer.metadata["executorch" if kind == "pte" else "litert"]["precision"] == "float32"
    assert recognizer.threshold().source == "calibrated" and recognizer.threshold().value == 0.3
    assert recognizer.model_id.name == files[kind].name and recognizer.model_id.dim == 32


def test_wrong_backend_device_or_file_is_one_clear_error(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(GhostFaceNetsError, match="runs with executorch"):
        load_embedder(files["pte"], backend="onnxruntime")
    with pytest.raises(GhostFaceNetsError, match="runs with litert"):
        load_embedder(files["tflite"], backend="fused")
    with pytest.raises(GhostFaceNetsError, match="on the CPU"):
        load_embedder(files["pte"], device="cuda")
    with pytest.raises(ModelFileError, match="no such file"):
        load_embedder(tmp_path / "missing.tflite")
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(files["tflite"].read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="not a usable LiteRT model"):
        load_embedder(damaged)
    damaged = tmp_path / "damaged.pte"
    damaged.write_bytes(files["pte"].read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="not a usable ExecuTorch program"):
        load_embedder(damaged)
