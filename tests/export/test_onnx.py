"""ONNX export, float16 and int8: onnxruntime matches PyTorch and the official Keras outputs; metadata; the CLI."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ghostfacenets import __version__, load_model, save_model
from ghostfacenets.cli import main
from ghostfacenets.data.crops import load_face_crops
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.evaluate.agreement import agreement, compare_embedders
from ghostfacenets.export.onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxError,
    OnnxPReLU,
    compress_weights,
    convert_float16,
    export_onnx,
    float_block_nodes,
    quantize_int8,
    read_onnx_metadata,
)
from ghostfacenets.inference import embed_images
from ghostfacenets.models.registry import create_model
from tests.helpers import require_module, shared_path
from tests.helpers.models import randomized

onnx = require_module("onnx")  # the whole module needs the onnx extra

KERAS = ["v1_w1.3_s1", "v2_w1_s1"]


def _run(path: Path, faces: np.ndarray) -> np.ndarray:
    return embed_images(path, faces, flip=False, progress=False)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


@pytest.fixture(scope="module")
def keras_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keras_onnx")
    return {
        name: export_onnx(
            load_model(shared_path("fixtures", "keras_reference", name, "model.h5")), folder / f"{name}.onnx"
        )
        for name in KERAS
    }


@pytest.mark.parametrize("name", KERAS)
def test_onnxruntime_matches_keras_golden_outputs(keras_exports: dict[str, Path], name: str) -> None:
    folder = shared_path("fixtures", "keras_reference", name)
    x = np.ascontiguousarray(np.load(folder / "inputs.npy").transpose(0, 3, 1, 2))
    golden = np.load(folder / "embeddings.npy")
    out = _ort(keras_exports[name], x)
    assert _cosine(out, golden).min() >= 0.99999
    assert np.abs(out - golden).max() <= 1e-4 * np.abs(golden).max()
    for rows in (1, 3):  # dynamic batch
        np.testing.assert_allclose(_ort(keras_exports[name], x[:rows]), out[:rows], atol=1e-4 * np.abs(out).max())


def test_graph_contract_and_metadata(keras_exports: dict[str, Path]) -> None:
    h5 = shared_path("fixtures", "keras_reference", "v1_w1.3_s1", "model.h5")
    proto = onnx.load(str(keras_exports["v1_w1.3_s1"]))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == INPUT_NAME and out.name == OUTPUT_NAME
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, 112, 112]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [512]
    ops = Counter(n.op_type for n in proto.graph.node)
    assert "BatchNormalization" not in ops and "PRelu" not in ops and "Pad" not in ops  # folded and simplified
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["architecture"] == "ghostfacenetv1-1.3-1"
    assert json.loads(props["preprocessing"])["normalization"]["formula"] == "(pixel - 127.5) / 128"
    assert json.loads(props["source"])["sha256"] == hashlib.sha256(h5.read_bytes()).hexdigest()
    assert props["license"] and props["precision"] == "float32"
    assert proto.producer_name == "ghostfacenets" and proto.producer_version == __version__
    meta = read_onnx_metadata(keras_exports["v1_w1.3_s1"])
    assert meta["config"]["gdc_bias"] is True and meta["onnx"]["input"]["name"] == INPUT_NAME
    assert meta["ghostfacenets_version"] == __version__


def test_v2_gate_upsampling_exports_as_bilinear_half_pixel(keras_exports: dict[str, Path]) -> None:
    proto = onnx.load(str(keras_exports["v2_w1_s1"]))
    resizes = [n for n in proto.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 14  # one DFC gate in each of blocks 3-16
    for node in resizes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["mode"] == b"linear" and attrs["coordinate_transformation_mode"] == b"half_pixel"


@pytest.mark.parametrize("name", ["ghostfacenetv1-1.3-2", "ghostfacenetv2-1.3-2", "ghostfacenetv2-0.5-1"])
def test_registry_models_match_pytorch(tmp_path: Path, name: str) -> None:
    model = randomized(create_model(name), seed=7)
    path = export_onnx(model, tmp_path / "m.onnx")
    x = torch.randn(5, 3, 112, 112)
    with torch.no_grad():
        expected = model(x).numpy()
    out = _ort(path, x.numpy())
    assert _cosine(out, expected).min() >= 0.99999
    assert read_onnx_metadata(path)["architecture"] == name


def test_onnx_prelu_is_prelu() -> None:
    prelu = nn.PReLU(4)
    with torch.no_grad():
        prelu.weight.copy_(torch.tensor([0.25, -0.5, 1.7, 0.0]))
    x = torch.linspace(-3, 3, 4 * 2 * 5).reshape(1, 4, 2, 5)
    torch.testing.assert_close(OnnxPReLU(prelu)(x), prelu(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript-based exporter
def test_read_metadata_refuses_foreign_onnx(tmp_path: Path) -> None:
    torch.onnx.export(nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 4, 4),), str(tmp_path / "x.onnx"), dynamo=False)
    with pytest.raises(OnnxError, match="metadata"):
        read_onnx_metadata(tmp_path / "x.onnx")


@pytest.fixture(scope="module")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = load_model(shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5"))
    return export_onnx(model, tmp_path_factory.mktemp("small") / "v1.onnx")


def test_float16_keeps_float32_io_and_agrees(small_export: Path, tmp_path: Path) -> None:
    half = convert_float16(small_export, tmp_path / "v1.fp16.onnx")
    proto = onnx.load(str(half))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    faces = load_face_crops(shared_path("data", "att_faces"), limit=20)
    assert agreement(_run(small_export, faces), _run(half, faces)).min >= 0.999
    assert read_onnx_metadata(half)["onnx"]["precision"] == "float16"
    assert read_onnx_metadata(half)["ghostfacenets_version"] == onnx.load(str(half)).producer_version == __version__


def test_compressed_weights_are_int8_per_channel_and_keep_embeddings(
    keras_exports: dict[str, Path], tmp_path: Path
) -> None:
    """Weight-only int8 (the browser's download): every large weight becomes int8 with the step its channel's largest
    magnitude / 127 and lies within half a step of its float32 value; the file is a third of the size, ORL faces'
    embeddings stay within cosine 0.999 of float32's; compressing again changes nothing; an old opset is refused."""
    from onnx import helper, numpy_helper

    source = keras_exports["v1_w1.3_s1"]
    data = source.read_bytes()
    compressed = compress_weights(data)
    assert len(compressed) < 0.35 * len(data)
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer}
    proto = onnx.load_from_string(compressed)
    stored = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    for node in nodes:
        weight, (quantised, scale) = original[node.output[0]], (stored[name] for name in node.input[:2])
        axis = node.attribute[0].i
        others = tuple(i for i in range(weight.ndim) if i != axis)
        np.testing.assert_allclose(scale, np.abs(weight).max(axis=others) / 127, rtol=1e-6)
        step = np.expand_dims(scale, others)
        assert quantised.dtype == np.int8 and node.output[0] not in stored
        assert np.all(np.abs(quantised * step - weight) <= step / 2 * (1 + 1e-5))
    layers = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    grouped = {n.input[1] for n in layers if any(a.name == "group" and a.i > 1 for a in n.attribute)}
    assert grouped and grouped <= set(stored)  # depthwise weights stay float32
    dense = {n.input[1] for n in layers} - grouped
    left = sum(stored[name].size for name in dense if name in stored)
    assert left < 0.02 * sum(original[name].size for name in dense)  # of the others, only the small ones

    path = tmp_path / "compressed.onnx"
    path.write_bytes(compressed)
    faces = load_face_crops(shared_path("data", "att_faces"), limit=40)
    assert agreement(_run(source, faces), _run(path, faces)).min >= 0.999
    assert read_onnx_metadata(path)["onnx"]["weights"] == f"int8 per output channel ({len(nodes)} tensors)"
    assert compress_weights(compressed) == compressed

    old = helper.make_model(
        helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 11)]
    ).SerializeToString()
    with pytest.raises(OnnxError, match="opset 13"):
        compress_weights(old)


def test_int8_quantisation_and_report(small_export: Path, tmp_path: Path) -> None:
    att = shared_path("data", "att_faces")
    calibration = load_face_crops(att, limit=21)  # not a multiple of the calibration batch
    quantised = quantize_int8(small_export, tmp_path / "v1.int8.onnx", calibration, method="percentile")
    proto = onnx.load(str(quantised))
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["QuantizeLinear"] > 50 and ops["DequantizeLinear"] > 100
    assert any(i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4 for i in proto.graph.initializer)
    assert quantised.stat().st_size < 0.4 * small_export.stat().st_size
    meta = read_onnx_metadata(quantised)
    assert meta["onnx"]["precision"] == "int8"
    assert meta["onnx"]["quantization"]["calibration_images"] == 21
    assert meta["architecture"] == "ghostfacenetv1-1-2" and meta["ghostfacenets_version"] == __version__

    faces = load_face_crops(att, limit=60)
    sample = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    report = compare_embedders(small_export, quantised, faces, [sample])
    # Random-weight fixture: agreement is what int8 preserves of the float32 function (0.98 measured here); a broken
    # calibration (wrong normalisation, wrong input) lands far lower.
    assert 0.9 <= report["agreement"]["cosine_mean"] < 1.0
    (entry,) = report["verification"]
    assert entry["set"] == "sample_py3" and entry["pairs"] == 8
    change = 100 * (entry["candidate"]["best_threshold_accuracy"] - entry["reference"]["best_threshold_accuracy"])
    assert entry["change_points"]["best_threshold_accuracy"] == pytest.approx(change)
    assert report["batch1_latency_ms"]["reference"] > 0

    same = compare_embedders(small_export, small_export, faces[:8], [sample])
    assert same["agreement"]["cosine_min"] == pytest.approx(1.0)
    assert same["verification"][0]["change_points"]["best_threshold_accuracy"] == 0.0


def test_quantize_refuses_bad_input(small_export: Path, tmp_path: Path) -> None:
    faces = np.zeros((2, 112, 112, 3), np.uint8)
    with pytest.raises(GhostFaceNetsError, match="calibration method"):
        quantize_int8(small_export, tmp_path / "q.onnx", faces, method="best")
    with pytest.raises(GhostFaceNetsError, match="uint8"):
        quantize_int8(small_export, tmp_path / "q.onnx", faces.astype(np.float32))


def test_keep_float_blocks_finds_its_nodes_or_raises(small_export: Path, tmp_path: Path) -> None:
    names = [n.name for n in onnx.load(str(small_export)).graph.node]
    kept = float_block_nodes(names, 2)
    assert float_block_nodes(names, 0) == []
    assert any(n.startswith("/stem/") for n in kept) and any(n.startswith("/blocks/blocks.1/") for n in kept)
    assert all(n.startswith(("/stem/", "/blocks/blocks.0/", "/blocks/blocks.1/")) for n in kept)
    assert not any(n.startswith("/blocks/blocks.2/") for n in kept)
    with pytest.raises(OnnxError, match=r"blocks\.16/"):  # a 17th block does not exist
        float_block_nodes(names, 17)
    renamed = onnx.load(str(small_export))  # a graph whose node names do not follow the module paths
    for i, node in enumerate(renamed.graph.node):
        node.name = f"node{i}"
    onnx.save(renamed, str(tmp_path / "renamed.onnx"))
    faces = np.zeros((2, 112, 112, 3), np.uint8)
    with pytest.raises(OnnxError, match="no node of the graph is named /stem/"):
        quantize_int8(tmp_path / "renamed.onnx", tmp_path / "q.onnx", faces, keep_float_blocks=1)
    assert not (tmp_path / "q.onnx").exists()


def test_cli_export_with_fp16_and_int8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    att = shared_path("data", "att_faces")
    sample = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    model_path = save_model(randomized(create_model("ghostfacenetv2-0.5-2"), seed=2), tmp_path / "m.safetensors")
    out = tmp_path / "out" / "m.onnx"
    code = main(
        [
            "export",
            str(model_path),
            "--onnx",
            str(out),
            "--fp16",
            "--int8",
            "--calib",
            str(att),
            "--calib-count",
            "16",
            "--calib-method",
            "minmax",
            "--keep-float-blocks",
            "2",
            "--bin",
            str(sample),
            "--json",
        ]
    )
    assert code == 0
    full = json.loads(capsys.readouterr().out)
    assert full["architecture"] == "ghostfacenetv2-0.5-2"
    report = full["onnx"]
    assert Path(report["float32"]["path"]) == out and out.is_file()
    assert report["float32"]["bytes"] == out.stat().st_size
    assert Path(report["int8"]["path"]).name == "m.int8.onnx" and Path(report["float16"]["path"]).name == "m.fp16.onnx"
    assert report["int8"]["versus_float32"]["faces_from"] == str(sample)
    assert report["int8"]["versus_float32"]["agreement"]["faces"] == 16
    assert report["float16"]["versus_float32"]["agreement"]["cosine_min"] >= 0.999
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.fp16.onnx", "m.int8.onnx", "m.onnx"]  # no leftovers
    graph = onnx.load(report["int8"]["path"]).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}

    def runs_float(prefix: str) -> list[bool]:  # a quantised Conv reads its input from DequantizeLinear
        convs = [n for n in graph.node if n.op_type == "Conv" and n.name.startswith(prefix)]
        assert convs
        return [producers.get(n.input[0]) != "DequantizeLinear" for n in convs]

    assert all(runs_float("/stem/")) and all(runs_float("/blocks/blocks.1/"))  # --keep-float-blocks 2
    assert not any(runs_float("/blocks/blocks.2/")) and not any(runs_float("/head/"))


def test_cli_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_path = save_model(create_model("ghostfacenetv1-0.5-2"), tmp_path / "m.safetensors")
    assert main(["export", str(model_path), "--onnx", str(tmp_path / "m.onnx"), "--int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calib" in err
    assert main(["export", str(tmp_path / "missing.h5"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "missing.h5" in capsys.readouterr().err
    assert main(["export", str(model_path)]) == 2
    assert "--tflite" in capsys.readouterr().err
    assert main(["export", str(model_path), "--tflite", str(tmp_path / "m.onnx")]) == 2
    assert "must end in .tflite" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
