"""Embedding: preprocessing, flip TTA, batching, ONNX models, and the Keras reference outputs end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ghostfacenets import create_model, load_model
from ghostfacenets.errors import GhostFaceNetsError, ModelFileError
from ghostfacenets.inference import OnnxEmbedder, TorchEmbedder, embed_images, load_embedder
from tests.helpers import require_module, shared_path
from tests.helpers.toy_models import pooled_colour_onnx

SIZE = 8


def _linear_model(seed: int = 0, dim: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, dim))


def _reference(model: nn.Module, images: np.ndarray, flip: bool) -> np.ndarray:
    """The definition, in numpy: normalise (x - 127.5) / 128 in NCHW, apply W x + b, add the mirrored image's."""
    weight = model[1].weight.detach().numpy().astype(np.float64)
    bias = model[1].bias.detach().numpy().astype(np.float64)

    def forward(x: np.ndarray) -> np.ndarray:
        nchw = ((x.astype(np.float64) - 127.5) / 128.0).transpose(0, 3, 1, 2)
        return nchw.reshape(len(x), -1) @ weight.T + bias

    return forward(images) + forward(images[:, :, ::-1]) if flip else forward(images)


@pytest.fixture()
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (7, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("flip", [True, False])
def test_embed_images_matches_the_definition(images: np.ndarray, flip: bool) -> None:
    model = _linear_model()
    out = embed_images(model, images, batch_size=3, flip=flip, progress=False)
    assert out.dtype == np.float32 and out.shape == (7, 5)
    np.testing.assert_allclose(out, _reference(model, images, flip), rtol=1e-5, atol=1e-5)
    assert not np.allclose(_reference(model, images, True), 2 * _reference(model, images, False))  # flip matters


def test_batch_size_does_not_change_results_and_mode_is_restored(images: np.ndarray) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    model.train()
    small = embed_images(model, images, batch_size=2, progress=False)
    large = embed_images(model, images, batch_size=64, progress=False)
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-6)  # eval mode: BN statistics not per batch
    assert model.training and model[1].num_batches_tracked.item() == 0


def test_input_checks(images: np.ndarray) -> None:
    model = create_model("ghostfacenetv1-0.5-2")
    with pytest.raises(GhostFaceNetsError, match="needs 112x112"):
        embed_images(model, images, progress=False)
    with pytest.raises(GhostFaceNetsError, match="uint8"):
        embed_images(model, images.astype(np.float32), progress=False)
    with pytest.raises(GhostFaceNetsError, match=r"\(N, H, W, 3\)"):
        embed_images(model, images[0], progress=False)
    empty = embed_images(model, np.zeros((0, 112, 112, 3), np.uint8), progress=False)
    assert empty.shape == (0, 512)


def test_load_embedder_sources(tmp_path: Path) -> None:
    model = create_model("ghostfacenetv1-0.5-2", embedding_size=64)
    embedder = load_embedder(model, backend="eager")
    assert isinstance(embedder, TorchEmbedder) and embedder.input_size == (112, 112)
    assert embedder.embedding_size == 64 and embedder.device == torch.device("cpu")
    assert load_embedder(embedder) is embedder
    with pytest.raises(ModelFileError, match="no such file"):
        load_embedder(tmp_path / "absent.onnx")
    with pytest.raises(ModelFileError):
        load_embedder(tmp_path / "absent.safetensors")
    with pytest.raises(ModelFileError):
        load_embedder(3.5)


@pytest.mark.parametrize("fastest", ["executorch", "onnxruntime", "fused"])
def test_models_loaded_for_the_cpu_take_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fastest: str
) -> None:
    """A GhostFaceNet loaded from a file runs with ExecuTorch on the CPU with the mobile extra, else with onnxruntime
    with the onnx extra, else BN-fused PyTorch, and embeds as the plain PyTorch model does."""
    from ghostfacenets import save_model
    from ghostfacenets.inference import FastEmbedder, embedders

    if fastest == "executorch":
        require_module("executorch.runtime", "mobile")
    else:
        monkeypatch.setattr(embedders, "executorch_available", lambda: False)
    if fastest == "onnxruntime":
        require_module("onnx")
    elif fastest == "fused":
        monkeypatch.setattr(embedders, "onnx_available", lambda: False)
    model = create_model("ghostfacenetv2-0.5-2", embedding_size=64)
    with torch.no_grad():  # non-trivial BN statistics, so that folding them is tested
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    loaded = load_embedder(save_model(model, tmp_path / "m.safetensors"), device="cpu")
    assert isinstance(loaded, FastEmbedder) and loaded.backend == fastest
    assert loaded.name.endswith(f"({loaded.backend})")
    crops = np.random.default_rng(2).integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)  # several chunks
    fast = embed_images(loaded, crops, batch_size=40, progress=False).astype(np.float64)
    plain = embed_images(TorchEmbedder(model), crops, batch_size=40, progress=False).astype(np.float64)
    cosine = np.sum(fast * plain, 1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(plain, axis=1)
    assert cosine.min() > 0.99999


def test_keras_reference_embeddings_end_to_end() -> None:
    """uint8 RGB crops through embed_images reproduce the official Keras model's outputs (RGB, scale, layout)."""
    folder = shared_path("fixtures", "keras_reference", "v1_w1_s2")
    inputs = np.load(folder / "inputs.npy")[:2]  # the two real faces: integer pixels
    pixels = inputs * 128.0 + 127.5
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
    crops = np.round(pixels).astype(np.uint8)
    expected = np.load(folder / "embeddings.npy")[:2]
    out = embed_images(load_model(folder / "model.h5"), crops, flip=False, progress=False)
    cosine = np.sum(out * expected, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(expected, axis=1)
    assert np.all(cosine > 0.99999)
    np.testing.assert_allclose(out, expected, atol=1e-3 * np.abs(expected).max())


# ------------------------------------------------------------------------------------------------------------ ONNX
def _linear_onnx(path: Path, model: nn.Module, batch: int | str, input_name: str, fp16: bool = False) -> Path:
    """A hand-built ONNX graph computing the same function as ``model`` (no exporter involved)."""
    onnx = require_module("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = model[1].weight.detach().numpy().T.astype(np.float32)
    bias = model[1].bias.detach().numpy().astype(np.float32)
    nodes = []
    source = input_name
    if fp16:
        nodes.append(helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT))
        source = "as_float"
    nodes += [
        helper.make_node("Flatten", [source], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [
            helper.make_tensor_value_info(
                input_name, TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT, [batch, 3, SIZE, SIZE]
            )
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, weight.shape[1]])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    onnx.save(onnx_model, str(path))
    return path


@pytest.mark.parametrize("batch, input_name", [("N", "input"), (2, "data")])
def test_onnx_embedder(tmp_path: Path, images: np.ndarray, batch: int | str, input_name: str) -> None:
    model = _linear_model(seed=1)
    path = _linear_onnx(tmp_path / "m.onnx", model, batch, input_name)
    embedder = load_embedder(path, device="cpu")
    assert isinstance(embedder, OnnxEmbedder) and embedder.input_name == input_name
    assert embedder.input_size == (SIZE, SIZE) and embedder.embedding_size == 5
    for flip in (True, False):
        out = embed_images(path, images, batch_size=3, flip=flip, progress=False)  # 7 images: padding with batch 2
        np.testing.assert_allclose(out, _reference(model, images, flip), rtol=1e-4, atol=1e-4)


def test_onnx_float16_input(tmp_path: Path, images: np.ndarray) -> None:
    model = _linear_model(seed=2)
    path = _linear_onnx(tmp_path / "half.onnx", model, "N", "input", fp16=True)
    out = embed_images(path, images, progress=False)
    np.testing.assert_allclose(out, _reference(model, images, True), rtol=2e-2, atol=2e-2)


def test_onnx_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a usable ONNX model"):
        load_embedder(bad)
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        path = _linear_onnx(tmp_path / "m.onnx", _linear_model(), "N", "input")
        with pytest.raises(GhostFaceNetsError, match="CUDA"):
            load_embedder(path, device="cuda")


def test_reduced_precision_model_gets_matching_input(images: np.ndarray) -> None:
    model = _linear_model(seed=3)
    out = embed_images(model.to(torch.bfloat16), images, progress=False)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(model.float(), images, True), rtol=0.05, atol=0.1)


def test_device_names_are_checked_with_one_clear_error(tmp_path: Path) -> None:
    from ghostfacenets.inference import resolve_device

    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type in ("cpu", "cuda")
    for bad in ("gpu", "cuda:x", "", 3.5):
        with pytest.raises(GhostFaceNetsError, match="unknown device"):
            resolve_device(bad)
    with pytest.raises(GhostFaceNetsError, match="unknown device"):
        load_embedder(_linear_model(), "gpu")
    onnx_path = pooled_colour_onnx(tmp_path / "m.onnx")
    with pytest.raises(GhostFaceNetsError, match="unknown device"):
        load_embedder(onnx_path, "gpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(GhostFaceNetsError, match="CUDA is not available"):
                resolve_device(name)
        with pytest.raises(GhostFaceNetsError, match="CUDA is not available"):
            TorchEmbedder(_linear_model(), "cuda")
    elif torch.cuda.device_count() < 8:
        with pytest.raises(GhostFaceNetsError, match="no GPU cuda:7"):
            resolve_device("cuda:7")


def test_the_backend_rule_for_modules_files_and_explicit_choices(tmp_path: Path) -> None:
    """auto: a GhostFaceNet on the CPU runs with ExecuTorch (the mobile extra), any other module eagerly; an
    explicit backend is obeyed and a backend that cannot run the source is one clear error."""
    from ghostfacenets.inference import FastEmbedder

    require_module("onnx")
    require_module("executorch.runtime", "mobile")
    model = create_model("ghostfacenetv1-0.5-2", embedding_size=32)
    auto = load_embedder(model, "cpu")
    assert isinstance(auto, FastEmbedder) and auto.backend == "executorch"
    assert load_embedder(model, "cpu", backend="onnxruntime").backend == "onnxruntime"
    eager = load_embedder(model, "cpu", backend="eager")
    assert isinstance(eager, TorchEmbedder) and eager.model is model
    fused = load_embedder(model, "cpu", backend="fused")
    assert isinstance(fused, FastEmbedder) and fused.backend == "fused"
    other = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
    assert isinstance(load_embedder(other, "cpu"), TorchEmbedder)
    with pytest.raises(GhostFaceNetsError, match="needs a GhostFaceNet"):
        load_embedder(other, "cpu", backend="fused")
    with pytest.raises(GhostFaceNetsError, match="unknown backend 'tflite'"):
        load_embedder(model, "cpu", backend="tflite")
    onnx_path = pooled_colour_onnx(tmp_path / "m.onnx")
    assert isinstance(load_embedder(onnx_path, backend="onnxruntime"), OnnxEmbedder)
    with pytest.raises(GhostFaceNetsError, match="runs with onnxruntime"):
        load_embedder(onnx_path, backend="fused")
