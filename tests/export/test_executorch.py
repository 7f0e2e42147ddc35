"""ExecuTorch export (XNNPACK): ExecuTorch's Python runtime reproduces PyTorch and the official Keras outputs in
float32; int8 (PT2E, XNNPACKQuantizer) with its agreement report; metadata; the program cache; clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ghostfacenets import __version__, load_model
from ghostfacenets.data.crops import load_face_crops
from ghostfacenets.data.transforms import to_array
from ghostfacenets.errors import GhostFaceNetsError, ModelFileError
from ghostfacenets.evaluate.agreement import compare_embedders
from ghostfacenets.models.registry import create_model
from tests.helpers import require_module, shared_path
from tests.helpers.models import randomized

KERAS = ["v1_w1.3_s1", "v2_w1_s1"]


@pytest.fixture(scope="module")
def et() -> Any:
    require_module("executorch.runtime", "mobile")
    from ghostfacenets.export import executorch

    return executorch


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _execute(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    """Outputs of a .pte program for float NCHW inputs, one image at a time, with ExecuTorch's Python runtime."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path.read_bytes())
    forward = program.load_method("forward")
    return np.concatenate(
        [forward.execute((torch.from_numpy(x_nchw[i : i + 1]),))[0].numpy() for i in range(len(x_nchw))]
    )


@pytest.fixture(scope="module")
def keras_pte(et: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keras_pte")
    return {
        name: et.export_executorch(
            load_model(shared_path("fixtures", "keras_reference", name, "model.h5")), folder / f"{name}.pte"
        )
        for name in KERAS
    }


@pytest.mark.parametrize("name", KERAS)
def test_float32_matches_keras_and_pytorch(keras_pte: dict[str, Path], name: str) -> None:
    folder = shared_path("fixtures", "keras_reference", name)
    x = np.ascontiguousarray(np.load(folder / "inputs.npy").transpose(0, 3, 1, 2))
    golden = np.load(folder / "embeddings.npy")
    out = _execute(keras_pte[name], x)
    with torch.no_grad():
        torch_out = load_model(folder / "model.h5")(torch.from_numpy(x)).numpy()
    assert _cosine(out, golden).min() >= 0.9999
    assert _cosine(out, torch_out).min() >= 0.9999
    assert np.abs(out - golden).max() <= 1e-3 * np.abs(golden).max()


def test_int8_agreement_report_and_size(et: Any, keras_pte: dict[str, Path], tmp_path: Path) -> None:
    folder = shared_path("fixtures", "keras_reference", "v2_w1_s1")
    faces = load_face_crops(shared_path("data", "att_faces"), 160)
    int8 = et.export_executorch(load_model(folder / "model.h5"), tmp_path / "m.int8.pte", "int8", faces[:100])
    x = np.ascontiguousarray(np.load(folder / "inputs.npy").transpose(0, 3, 1, 2))
    assert _cosine(_execute(int8, x), np.load(folder / "embeddings.npy")).min() >= 0.99
    assert int8.stat().st_size < 0.35 * keras_pte["v2_w1_s1"].stat().st_size
    meta = et.read_executorch_metadata(int8)["executorch"]
    assert meta["precision"] == "int8" and meta["quantization"]["calibration_images"] == 100
    report = compare_embedders(keras_pte["v2_w1_s1"], int8, faces[100:])  # held-out faces
    assert report["agreement"]["faces"] == 60
    assert 0.99 <= report["agreement"]["cosine_mean"] < 1.0
    assert report["batch1_latency_ms"]["candidate"] > 0


def _xnnpack_operators(path: Path, tmp_path: Path) -> list[str]:
    """The operators XNNPACK runs for one batch-1 call of a .pte program, from its ETDump profile."""
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path.read_bytes(), enable_etdump=True)
    program.load_method("forward").execute((torch.zeros(1, 3, 112, 112),))
    program.write_etdump_result_to_file(str(tmp_path / "run.etdp"), str(tmp_path / "debug.bin"))
    events = Inspector(etdump_path=str(tmp_path / "run.etdp")).to_dataframe()
    return [str(name) for name, delegated in zip(events.event_name, events.is_delegated_op) if delegated]


def test_int8_v1_runs_in_int8_from_input_to_output(et: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """V1's zero pads (TF-same padding) and every PReLU run in int8 inside XNNPACK: the only conversions are the
    input's and the output's, where ExecuTorch's own quantizer and partitioner leave both in float32 with a
    conversion on either side; and the int8 embeddings agree with float32 as well as that stock program's do."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    model = load_model(shared_path("fixtures", "keras_reference", "v1_w1.3_s1", "model.h5"))
    faces = load_face_crops(shared_path("data", "att_faces"), 124)
    int8 = et.export_executorch(model, tmp_path / "v1.int8.pte", "int8", faces[:64])
    stock_quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    monkeypatch.setattr(et, "_quantizer", lambda: stock_quantizer)
    monkeypatch.setattr(et, "_partitioner", XnnpackPartitioner)
    stock = et.export_executorch(model, tmp_path / "v1.stock.pte", "int8", faces[:64])

    operators, stock_operators = _xnnpack_operators(int8, tmp_path), _xnnpack_operators(stock, tmp_path)
    prelus = sum(isinstance(module, nn.PReLU) for module in model.modules())
    assert sum(name.startswith("PReLU") for name in operators) == prelus
    assert [name for name in operators if name.startswith("Convert")] == ["Convert (NC) #1", "Convert (NC) #2"]
    assert not [name for name in operators if "Pad" in name or "X32" in name]
    assert sum(name.startswith("Convert") for name in stock_operators) > 2 * prelus
    assert any("Pad" in name for name in stock_operators)

    held_out = to_array(faces[64:])
    with torch.no_grad():
        reference = model(torch.from_numpy(held_out)).numpy()
    ours, theirs = _cosine(_execute(int8, held_out), reference), _cosine(_execute(stock, held_out), reference)
    assert ours.mean() >= theirs.mean() - 0.002 and ours.min() >= theirs.min() - 0.01


def test_metadata_round_trip(et: Any, keras_pte: dict[str, Path]) -> None:
    h5 = shared_path("fixtures", "keras_reference", "v2_w1_s1", "model.h5")
    meta = et.read_executorch_metadata(keras_pte["v2_w1_s1"])
    assert meta["architecture"] == "ghostfacenetv2-1-1"
    assert meta["ghostfacenets_version"] == __version__
    assert meta["embedding_size"] == 512
    assert meta["source"]["sha256"] == hashlib.sha256(h5.read_bytes()).hexdigest()
    assert meta["license"]
    assert meta["preprocessing"]["layout"] == "NCHW"
    assert meta["preprocessing"]["normalization"]["formula"] == "(pixel - 127.5) / 128"
    assert meta["executorch"]["input"]["shape"] == [1, 3, 112, 112]
    assert meta["executorch"]["delegate"] == "XNNPACK"


def test_batched_program_and_cache(et: Any) -> None:
    from ghostfacenets.hub import cache_dir

    torch.manual_seed(0)
    model = randomized(create_model("ghostfacenetv1-0.5-2"))
    path = et.cached_program(model, max_batch=4)
    assert path.parent == cache_dir() / "executorch"
    stamp = path.stat().st_mtime_ns
    assert et.cached_program(model, max_batch=4) == path and path.stat().st_mtime_ns == stamp  # not lowered again
    x = torch.randn(4, 3, 112, 112)
    forward = (program := et.load_program(path)).load_method("forward")
    assert program.method_names == {"forward"}  # in-memory programs carry no metadata
    with torch.no_grad():
        expected = model(x).numpy()
    batched = forward.execute((x,))[0].numpy()
    assert _cosine(batched, expected).min() >= 0.9999
    np.testing.assert_allclose(forward.execute((x[:1],))[0].numpy(), batched[:1], atol=1e-4)
    with torch.no_grad():
        next(model.parameters()).mul_(2.0)
    assert et.cached_program(model, max_batch=4) != path  # other weights, another program


def test_bad_inputs_give_one_clear_error(et: Any, tmp_path: Path) -> None:
    model = create_model("ghostfacenetv1-0.5-2")
    with pytest.raises(GhostFaceNetsError, match="GhostFaceNet"):
        et.export_executorch(nn.Conv2d(3, 8, 3), tmp_path / "x.pte")  # type: ignore[arg-type]
    with pytest.raises(GhostFaceNetsError, match="precision"):
        et.export_executorch(model, tmp_path / "x.pte", "float16")
    with pytest.raises(GhostFaceNetsError, match="calibration"):
        et.export_executorch(model, tmp_path / "x.pte", "int8")
    with pytest.raises(GhostFaceNetsError, match="max_batch"):
        et.export_executorch(model, tmp_path / "x.pte", max_batch=64)
    assert not (tmp_path / "x.pte").exists()
    broken = tmp_path / "y.pte"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a usable ExecuTorch program"):
        et.read_executorch_metadata(broken)
    with pytest.raises(ModelFileError, match="no such file"):
        et.load_program(tmp_path / "missing.pte")


def test_a_program_xnnpack_refuses_is_not_written(et: Any, tmp_path: Path) -> None:
    """XNNPACK checks quantisation parameters only when a method loads: an untrained model calibrated on noise gives
    an int8 program it refuses, which the export says in one line instead of writing a file that cannot run."""
    torch.manual_seed(0)
    model = create_model("ghostfacenetv1-0.5-2").eval()
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 112, 112, 3), dtype=np.uint8)
    with pytest.raises(et.ExecuTorchError, match=r"cannot load its forward method .*nothing was written") as caught:
        et.export_executorch(model, tmp_path / "x.pte", "int8", noise)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "x.pte").exists()


def test_cli_exports_all_mobile_files_with_reports(et: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from ghostfacenets import save_model
    from ghostfacenets.cli import main

    require_module("litert_torch", "mobile")
    att = shared_path("data", "att_faces")
    model_path = save_model(randomized(create_model("ghostfacenetv1-0.5-2"), seed=3), tmp_path / "m.safetensors")
    out = tmp_path / "out"
    args = ["export", str(model_path), "--tflite", str(out / "m.tflite"), "--executorch", str(out / "m.pte")]
    code = main([*args, "--fp16", "--int8", "--calib", str(att), "--calib-count", "24", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == [
        "m.fp16.tflite",
        "m.int8.pte",
        "m.int8.tflite",
        "m.pte",
        "m.tflite",
    ]  # no float16 program for ExecuTorch, no leftovers
    for runtime in ("litert", "executorch"):
        float32 = report[runtime]["float32"]
        assert float32["versus_pytorch"]["agreement"]["cosine_min"] >= 0.9999  # the file against PyTorch itself
        int8 = report[runtime]["int8"]
        assert int8["bytes"] < 0.4 * float32["bytes"]
        assert int8["versus_float32"]["agreement"]["faces"] == 400  # all ORL faces: no --faces or --bin given
        assert 0.9 <= int8["versus_float32"]["agreement"]["cosine_mean"] < 1.0
    assert report["litert"]["float16"]["versus_float32"]["agreement"]["cosine_min"] >= 0.999
