"""LiteRT export: Google's runtime (ai-edge-litert) reproduces PyTorch and the official Keras outputs in float32 and
with float16 weights; full-integer int8 files with their agreement report; metadata; clear errors."""

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
from ghostfacenets.errors import GhostFaceNetsError, ModelFileError
from ghostfacenets.evaluate.agreement import compare_embedders
from tests.helpers import require_module, shared_path

KERAS = ["v1_w1.3_s1", "v2_w1_s1"]
_WEIGHTED = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")


@pytest.fixture(scope="module")
def litert(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_module("litert_torch", "mobile")
    require_module("ai_edge_litert", "mobile")
    from ghostfacenets.export import litert

    return litert


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _interpret(path: Path, x_nhwc: np.ndarray) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """Raw outputs of a .tflite file for float NHWC inputs, one image at a time, with LiteRT's own interpreter;
    int8 inputs and outputs converted with the scale and zero point of the tensors (real = scale * (q - zp))."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in x_nhwc:
        feed = image[None]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            feed = np.clip(np.round(feed / scale) + zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()
        row = interpreter.get_tensor(out["index"]).copy()
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            row = (row.astype(np.float32) - zero) * scale
        rows.append(row)
    return np.concatenate(rows), inp, out


@pytest.fixture(scope="module")
def keras_tflite(litert: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keras_tflite")
    return {
        name: litert.export_litert(
            load_model(shared_path("fixtures", "keras_reference", name, "model.h5")), folder / f"{name}.tflite"
        )
        for name in KERAS
    }


@pytest.mark.parametrize("name", KERAS)
def test_float32_matches_keras_and_pytorch(keras_tflite: dict[str, Path], name: str) -> None:
    folder = shared_path("fixtures", "keras_reference", name)
    x = np.load(folder / "inputs.npy")  # NHWC, normalised: the file's own layout
    golden = np.load(folder / "embeddings.npy")
    out, inp, _ = _interpret(keras_tflite[name], x)
    assert list(inp["shape"]) == [1, 112, 112, 3] and inp["dtype"] == np.float32
    with torch.no_grad():
        torch_out = load_model(folder / "model.h5")(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert _cosine(out, golden).min() >= 0.9999
    assert _cosine(out, torch_out).min() >= 0.9999
    assert np.abs(out - golden).max() <= 1e-3 * np.abs(golden).max()


def test_float16_weights_match_keras(litert: Any, tmp_path: Path) -> None:
    folder = shared_path("fixtures", "keras_reference", "v1_w1.3_s1")
    model = load_model(folder / "model.h5")
    fp32 = litert.export_litert(model, tmp_path / "m.tflite")
    fp16 = litert.export_litert(model, tmp_path / "m.fp16.tflite", "float16")
    out, inp, _ = _interpret(fp16, np.load(folder / "inputs.npy"))
    assert inp["dtype"] == np.float32  # float16 weights, float32 input and output
    assert _cosine(out, np.load(folder / "embeddings.npy")).min() >= 0.999
    assert fp16.stat().st_size < 0.55 * fp32.stat().st_size
    meta = litert.read_litert_metadata(fp16)
    assert meta["litert"]["precision"] == "float16"


def test_int8_weights_keep_float32_embeddings_in_a_third_of_the_bytes(
    litert: Any, keras_tflite: dict[str, Path], tmp_path: Path
) -> None:
    """int8_weights (what browsers get by default): convolution and fully connected weights stored in int8 per output
    channel, depthwise and small ones (the first convolution) and every activation float32; a third of the bytes;
    the official Keras model's embeddings of 40 ORL faces stay within cosine 0.999 of its float32 file's."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from ghostfacenets.data.transforms import to_array

    float32 = keras_tflite["v1_w1.3_s1"]
    stored = tmp_path / "m.wi8.tflite"
    stored.write_bytes(litert.int8_weights(float32.read_bytes()))
    assert stored.stat().st_size < 0.35 * float32.stat().st_size
    undelegated = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # the file's own operators, not XNNPACK's
    graph = Interpreter(model_path=str(stored), experimental_op_resolver_type=undelegated)
    operators = graph._get_ops_details()
    dtypes = {t["index"]: t["dtype"] for t in graph.get_tensor_details()}
    dequantized = {op["outputs"][0]: op["inputs"][0] for op in operators if op["op_name"] == "DEQUANTIZE"}
    weights = {name: [op["inputs"][1] for op in operators if op["op_name"] == name] for name in _WEIGHTED}
    sizes = {t["index"]: int(np.prod(t["shape"])) for t in graph.get_tensor_details()}
    large = [w for w in weights["CONV_2D"] + weights["FULLY_CONNECTED"] if sizes[w] >= 1024]
    assert large and all(
        (w in dequantized) == (sizes[w] >= 1024) for w in weights["CONV_2D"] + weights["FULLY_CONNECTED"]
    )
    assert all(dtypes[source] == np.int8 for source in dequantized.values())
    assert weights["DEPTHWISE_CONV_2D"] and not any(w in dequantized for w in weights["DEPTHWISE_CONV_2D"])
    faces = to_array(load_face_crops(shared_path("data", "att_faces"), 40)).transpose(0, 2, 3, 1)
    out, inp, _ = _interpret(stored, faces)
    assert inp["dtype"] == np.float32
    assert _cosine(out, _interpret(float32, faces)[0]).min() >= 0.999


def test_int8_is_full_integer_with_agreement_report(litert: Any, keras_tflite: dict[str, Path], tmp_path: Path) -> None:
    folder = shared_path("fixtures", "keras_reference", "v2_w1_s1")
    model = load_model(folder / "model.h5")
    faces = load_face_crops(shared_path("data", "att_faces"), 160)
    int8 = litert.export_litert(model, tmp_path / "m.int8.tflite", "int8", faces[:100])
    x = np.load(folder / "inputs.npy")
    out, inp, out_details = _interpret(int8, x)
    assert inp["dtype"] == np.int8 and out_details["dtype"] == np.int8
    meta = litert.read_litert_metadata(int8)["litert"]
    assert meta["precision"] == "int8" and meta["quantization"]["calibration_images"] == 100
    scale, zero = inp["quantization"]
    assert meta["input"]["quantization"] == {
        "scale": pytest.approx(scale),
        "zero_point": zero,
        "real_value": "scale * (q - zero_point)",
    }
    assert _cosine(out, np.load(folder / "embeddings.npy")).min() >= 0.99
    assert int8.stat().st_size < 0.4 * keras_tflite["v2_w1_s1"].stat().st_size
    report = compare_embedders(keras_tflite["v2_w1_s1"], int8, faces[100:])  # held-out faces
    assert report["agreement"]["faces"] == 60
    assert 0.99 <= report["agreement"]["cosine_mean"] < 1.0
    assert report["batch1_latency_ms"]["candidate"] > 0


def test_metadata_states_the_input_contract(litert: Any, keras_tflite: dict[str, Path]) -> None:
    h5 = shared_path("fixtures", "keras_reference", "v1_w1.3_s1", "model.h5")
    meta = litert.read_litert_metadata(keras_tflite["v1_w1.3_s1"])
    assert meta["architecture"] == "ghostfacenetv1-1.3-1"
    assert meta["ghostfacenets_version"] == __version__
    assert meta["embedding_size"] == 512
    assert meta["source"]["sha256"] == hashlib.sha256(h5.read_bytes()).hexdigest()
    assert meta["license"]
    pre = meta["preprocessing"]
    assert pre["layout"] == "NHWC" and pre["color_order"] == "RGB" and pre["input_size"] == [112, 112]
    assert pre["normalization"]["formula"] == "(pixel - 127.5) / 128"
    assert np.allclose(pre["alignment"]["template"][0], [38.2946, 51.6963])
    assert meta["litert"]["input"]["shape"] == [1, 112, 112, 3]
    assert meta["litert"]["output"]["shape"] == [1, 512]
    assert meta["litert"]["precision"] == "float32"


def test_bad_inputs_give_one_clear_error(litert: Any, tmp_path: Path) -> None:
    from ghostfacenets.models.registry import create_model

    model = create_model("ghostfacenetv1-0.5-2")
    with pytest.raises(GhostFaceNetsError, match="GhostFaceNet"):
        litert.export_litert(nn.Conv2d(3, 8, 3), tmp_path / "x.tflite")  # type: ignore[arg-type]
    with pytest.raises(GhostFaceNetsError, match="precision"):
        litert.export_litert(model, tmp_path / "x.tflite", "int4")
    with pytest.raises(GhostFaceNetsError, match="calibration"):
        litert.export_litert(model, tmp_path / "x.tflite", "int8")
    with pytest.raises(GhostFaceNetsError, match="uint8 RGB crops"):
        litert.export_litert(model, tmp_path / "x.tflite", "int8", np.zeros((4, 112, 112, 3), np.float32))
    assert not (tmp_path / "x.tflite").exists()
    not_tflite = tmp_path / "y.tflite"
    not_tflite.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelFileError, match="not a LiteRT"):
        litert.read_litert_metadata(not_tflite)
    with pytest.raises(ModelFileError, match="no such file"):
        litert.read_litert_metadata(tmp_path / "missing.tflite")
