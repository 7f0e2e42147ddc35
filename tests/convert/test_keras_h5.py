"""Official Keras h5 -> PyTorch: numerical parity with the golden outputs, and reading what each file says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import ghostfacenets
from ghostfacenets.convert.keras_h5 import infer_config, load_keras_h5, read_keras_h5
from ghostfacenets.errors import ConversionError
from ghostfacenets.models.registry import ARCHITECTURES, create_model
from tests.helpers import shared_path
from tests.helpers.keras_writer import write_keras_h5

FIXTURES = ["v1_w1.3_s1", "v1_w1_s2", "v2_w1_s1"]


def _embed(model: torch.nn.Module, inputs_nhwc: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    blocks: list[np.ndarray] = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: blocks.append(o[0].permute(1, 2, 0).numpy())) for b in model.blocks
    ]
    with torch.no_grad():
        out = model(torch.from_numpy(inputs_nhwc).permute(0, 3, 1, 2)).numpy()
    for h in hooks:
        h.remove()
    return out, blocks


def _assert_parity(out: np.ndarray, ref: np.ndarray) -> None:
    cosine = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.all(cosine >= 0.99999), cosine
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("variant", FIXTURES)
def test_official_keras_models_reproduce_golden_outputs(variant: str) -> None:
    folder = shared_path("fixtures", "keras_reference", variant)
    meta = json.loads((folder / "meta.json").read_text())
    model = ghostfacenets.load_model(folder / "model.h5")
    assert not model.training
    config = model.config
    assert (config.version, config.width, config.stem_stride, config.gdc_bias) == (
        int(meta["version"][1]),
        meta["width"],
        meta["stem_stride"],
        meta["gdc_conv_bias"],
    )
    assert sum(p.numel() for p in model.parameters()) == meta["params_trainable"]
    inputs = np.load(folder / "inputs.npy")
    out, blocks = _embed(model, inputs)
    _assert_parity(out, np.load(folder / "embeddings.npy"))
    reference_blocks = np.load(folder / "blocks.npz")
    assert len(blocks) == 16
    for i, ours in enumerate(blocks):
        ref = reference_blocks[f"block{i:02d}"]
        ref = ref[0] if ref.ndim == 4 else ref
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max(), f"block {i} diverges"


def _weights_only_copy(source: Path, target: Path) -> Path:
    """What ``model.save_weights`` writes: the layer groups at the root, no model config."""
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        weights = src["model_weights"]
        for key in weights:
            src.copy(weights[key], dst, name=key)
        for key, value in weights.attrs.items():
            dst.attrs[key] = value
    return target


@pytest.mark.parametrize("variant", FIXTURES)
def test_weights_only_files_give_the_same_model(variant: str, tmp_path: Path) -> None:
    folder = shared_path("fixtures", "keras_reference", variant)
    path = _weights_only_copy(folder / "model.h5", tmp_path / "weights.h5")
    assert read_keras_h5(path).configs == {}
    model = ghostfacenets.load_model(path)
    out, _ = _embed(model, np.load(folder / "inputs.npy"))
    _assert_parity(out, np.load(folder / "embeddings.npy"))


def test_mixed_float16_policies_and_float16_storage_are_read(tmp_path: Path) -> None:
    """A Keras 2.15 checkpoint trained with mixed_float16: dtype policies in the config, some float16 variables."""
    folder = shared_path("fixtures", "keras_reference", "v1_w1.3_s1")
    path = shutil.copy(folder / "model.h5", tmp_path / "mixed.h5")
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] != "InputLayer":
                layer["config"]["dtype"] = {
                    "module": "keras",
                    "class_name": "Policy",
                    "config": {"name": "mixed_float16"},
                    "registered_name": None,
                }
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        alpha = f["model_weights/activation/activation/alpha:0"]
        data = alpha[...].astype(np.float16)
        del f["model_weights/activation/activation/alpha:0"]
        f["model_weights/activation/activation"].create_dataset("alpha:0", data=data)
    model = ghostfacenets.load_model(path)
    assert model.stem[2].weight.dtype == torch.float32
    out, _ = _embed(model, np.load(folder / "inputs.npy"))
    ref = np.load(folder / "embeddings.npy")
    cosine = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.all(cosine >= 0.9999)  # the stem alphas were rounded to float16: close, not bit-identical


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_variant_round_trips_through_the_keras_layout(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name, gdc_bias=name.endswith("-1")).eval()
    for module in model.modules():  # non-trivial BN statistics and PReLU alphas
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
        elif isinstance(module, torch.nn.PReLU):
            module.weight.data.uniform_(0, 0.5)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        expected = model(x)
    whole = name.endswith("-2")  # half the variants as whole-model files, half weights-only
    loaded = ghostfacenets.load_model(write_keras_h5(model, tmp_path / "m.h5", whole_model=whole))
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=1e-5)


def test_unusual_width_and_embedding_are_read_from_the_file(tmp_path: Path) -> None:
    model = ghostfacenets.GhostFaceNetV1(width=0.8, stem_stride=2, embedding_size=256, bn_eps=1e-3)
    path = write_keras_h5(model, tmp_path / "custom.h5")
    config = infer_config(read_keras_h5(path))
    assert (config.width, config.embedding_size, config.bn_eps, config.stem_stride) == (0.8, 256, 1e-3, 2)


def test_non_ghostfacenet_files_give_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ConversionError, match="not a readable HDF5"):
        load_keras_h5(text)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ConversionError, match="layer_names"):
        load_keras_h5(empty)
    model = create_model("ghostfacenetv1-0.5-2")
    path = write_keras_h5(model, tmp_path / "cut.h5")
    with h5py.File(path, "r+") as f:
        del f["model_weights/GDC_conv"]
        listed = [n.decode() if isinstance(n, bytes) else str(n) for n in f["model_weights"].attrs["layer_names"]]
        names = [n.encode() for n in listed if n != "GDC_conv"]
        f["model_weights"].attrs["layer_names"] = names
    with pytest.raises(ConversionError, match="GDC"):
        load_keras_h5(path)
    with h5py.File(path, "r+") as f:  # a listed layer whose group is gone: a damaged file
        f["model_weights"].attrs["layer_names"] = [*names, b"GDC_conv"]
    with pytest.raises(ConversionError, match="damaged"):
        load_keras_h5(path)


def test_damaged_keras_files_give_one_clear_error(tmp_path: Path) -> None:
    model = create_model("ghostfacenetv1-0.5-2")
    missing = write_keras_h5(model, tmp_path / "missing.h5")
    with h5py.File(missing, "r+") as f:  # a weight listed in weight_names whose dataset is gone
        group = f["model_weights/GDC_conv"]
        del group[_text_attr(group.attrs["weight_names"][0])]
    with pytest.raises(ConversionError, match="damaged or unsupported Keras file"):
        load_keras_h5(missing)
    for config in ("null", "{not json"):
        odd = write_keras_h5(model, tmp_path / "odd.h5")
        with h5py.File(odd, "r+") as f:
            f.attrs["model_config"] = config
        with pytest.raises(ConversionError, match="damaged or unsupported Keras file"):
            load_keras_h5(odd)


def _text_attr(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_batchnorm_without_scale_reads_as_gamma_one(tmp_path: Path) -> None:
    """Keras BatchNormalization(scale=False) stores no gamma (the official pre_embedding option): gamma is 1."""
    model = create_model("ghostfacenetv1-0.5-2").eval()
    with torch.no_grad():
        model.head.bn_embedding.weight.fill_(1.0)
        model.head.bn_embedding.running_var.uniform_(0.5, 2.0)
    path = write_keras_h5(model, tmp_path / "noscale.h5")
    with h5py.File(path, "r+") as f:
        group = f["model_weights/pre_embedding"]
        names = [_text_attr(n) for n in group.attrs["weight_names"]]
        gamma = next(n for n in names if n.endswith("gamma:0"))
        del group[gamma]
        group.attrs["weight_names"] = [n.encode() for n in names if n != gamma]
    loaded = ghostfacenets.load_model(path)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-4)
