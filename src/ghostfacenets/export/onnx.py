"""ONNX export (dynamic batch, simplified, with the package's metadata), float16 conversion and int8 static
quantisation with onnxruntime (what that changes is measured by :mod:`ghostfacenets.evaluate.agreement`).

Contract of every exported file (``ghostfacenets.inference.OnnxEmbedder`` relies on it): one input ``input``,
float32 (N, 3, 112, 112), RGB normalised as (pixel - 127.5) / 128, N dynamic; one output ``embedding``, float32
(N, D), not L2-normalised. The float16 and int8 files keep float32 input and output. ``metadata_props`` holds
``ghostfacenets`` (all metadata as JSON) and, for tools that read single keys, ``architecture``, ``preprocessing``
(JSON), ``source`` (JSON), ``license`` and ``precision``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.transforms import to_array
from ..errors import GhostFaceNetsError, ModelFileError
from ..files import atomic_path, written_by
from ..models.fuse import fuse_model
from ..models.ghostfacenet import GhostFaceNet

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
METADATA_KEY = "ghostfacenets"
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


class OnnxError(GhostFaceNetsError):
    """An ONNX file that cannot be written, read or quantised."""


def onnx_available() -> bool:
    """Whether the onnx extra (onnx and onnxslim, which torch's exporter needs) is installed."""
    return importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxslim") is not None


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxslim
    except ImportError:
        raise OnnxError("ONNX export needs the onnx extra: pip install 'ghostfacenets[onnx]'") from None
    return onnx, onnxslim


class OnnxPReLU(nn.Module):
    """PReLU written as ``x + (1 - alpha) * relu(-x)``, the same function, with the two per-channel products as
    depthwise 1x1 convolutions.

    onnxruntime's CPU ``PRelu`` kernel with per-channel slopes is 10-40 times slower than a plain ``Mul`` of the same
    size (measured with onnxruntime 1.32; see docs/deployment.md) and took half the time of a whole GhostFaceNet. This
    form runs as two small convolutions (ReLU and the residual addition fused into them) in onnxruntime's blocked
    NCHWc layout, with no layout conversions around it, and quantises to int8.
    """

    def __init__(self, prelu: nn.PReLU) -> None:
        super().__init__()
        channels = prelu.weight.numel()
        self.negate = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        self.scale = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        with torch.no_grad():
            self.negate.weight.fill_(-1.0)
            self.scale.weight.copy_((1.0 - prelu.weight.detach()).reshape(channels, 1, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale(torch.relu(self.negate(x)))


def onnx_ready(model: GhostFaceNet) -> nn.Module:
    """A fused float32 CPU copy of ``model`` with onnxruntime-friendly PReLUs, ready for ``torch.onnx.export``."""
    ready = fuse_model(copy.deepcopy(model).float().cpu(), inplace=True)
    for parent in list(ready.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                if child.weight.numel() == 1:
                    raise OnnxError("a PReLU with one shared slope; GhostFaceNets use one slope per channel")
                setattr(parent, name, OnnxPReLU(child))
    return ready


def export_metadata(model: GhostFaceNet, precision: str = "float32", **extra: Any) -> dict[str, Any]:
    """The metadata an exported file carries: the model's own (source, licence, training...) plus the ONNX facts."""
    from .. import __version__
    from ..model_io import model_metadata

    meta = model_metadata(model)
    for key in ("format", "format_version"):  # those describe the package's safetensors files
        meta.pop(key, None)
    meta["onnx"] = {
        "opset": OPSET,
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", 3, model.config.input_size, model.config.input_size],
            "dtype": "float32",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["N", model.config.embedding_size], "dtype": "float32"},
        "precision": precision,
        "exported_by": f"ghostfacenets {__version__} (torch {torch.__version__})",
        **extra,
    }
    return meta


def _set_metadata(proto: Any, meta: dict[str, Any]) -> None:
    """The metadata in ``metadata_props`` and the producer fields, with the version of the package writing it."""
    from .. import __version__

    meta = {**meta, **written_by()}
    props = {
        METADATA_KEY: json.dumps(meta),
        "architecture": str(meta.get("architecture", "")),
        "preprocessing": json.dumps(meta.get("preprocessing", {})),
        "source": json.dumps(meta.get("source", {})),
        "license": str(meta.get("license", "")),
        "precision": str(meta.get("onnx", {}).get("precision", "")),
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "ghostfacenets"
    proto.producer_version = __version__
    proto.doc_string = (
        f"GhostFaceNet {meta.get('architecture', '')} face embedding; input {INPUT_NAME} float32 "
        f"(N, 3, H, W) RGB (pixel - 127.5) / 128; output {OUTPUT_NAME} (N, D), not normalised"
    )


def _save(proto: Any, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def onnx_bytes(model: GhostFaceNet) -> bytes:
    """The ONNX graph of the fused ``model`` as exported by torch (opset 17, dynamic batch), not yet simplified and
    without metadata; what :func:`export_onnx` writes and the "onnxruntime" backend of ``FastEmbedder`` runs."""
    _require_onnx()  # torch's exporter needs the onnx package
    if not isinstance(model, GhostFaceNet):
        raise OnnxError(f"ONNX export expects a GhostFaceNet, got {type(model).__name__}")
    size = model.config.input_size
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the torch.export one, which needs onnxscript and takes
        # ten times longer here; its graphs are the same after simplification.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(
            onnx_ready(model),
            (torch.zeros(1, 3, size, size),),
            buffer,  # type: ignore[arg-type]  # torch's annotation omits the file objects it accepts
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def export_onnx(model: GhostFaceNet, path: str | Path, simplify: bool = True) -> Path:
    """Write ``model`` as ONNX (opset 17, dynamic batch, BatchNorm folded, simplified with onnxslim) with its
    metadata in ``metadata_props``; atomic."""
    onnx, onnxslim = _require_onnx()
    proto = onnx.load_from_string(onnx_bytes(model))
    if simplify:
        proto = onnxslim.slim(proto)
    extra = {"simplified_with": f"onnxslim {onnxslim.__version__}"} if simplify else {}
    _set_metadata(proto, export_metadata(model, "float32", **extra))
    return _save(proto, Path(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``ghostfacenets`` metadata of an exported ONNX file (read with onnxruntime, no onnx package needed)."""
    metadata = session_metadata(open_session(path))
    if metadata is None:
        raise OnnxError(f"{path}: ONNX file without ghostfacenets metadata (not exported by ghostfacenets)")
    return metadata


def session_metadata(session: Any) -> dict[str, Any] | None:
    """The ``ghostfacenets`` metadata of an onnxruntime session's model, or None when it has none (or not JSON)."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        return dict(json.loads(raw)) if raw is not None else None
    except json.JSONDecodeError:
        return None


def open_session(path: str | Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise ModelFileError(f"{path}: not a usable ONNX model ({exc})") from None


def _load_proto(path: Path) -> Any:
    onnx, _ = _require_onnx()
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelFileError(f"{path}: not an ONNX file ({exc})") from None


def convert_float16(source: str | Path, path: str | Path) -> Path:
    """A float16 copy of an exported float32 ONNX file, float32 input and output kept (for GPUs; on CPUs
    onnxruntime computes most float16 operators slower than float32)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _, onnxslim = _require_onnx()
    source = Path(source)
    meta = read_onnx_metadata(source)
    # The converter appends the input and output casts at the end of the node list; onnxslim sorts the graph again.
    proto = onnxslim.slim(convert_float_to_float16(_load_proto(source), keep_io_types=True))
    meta["onnx"] = {**meta.get("onnx", {}), "precision": "float16", "converted_from": source.name}
    _set_metadata(proto, meta)
    return _save(proto, Path(path))


def compress_weights(data: bytes, min_size: int = 1024) -> bytes:
    """The ONNX model ``data`` with its convolution and matrix weights stored in int8, symmetric per output channel,
    each turned back into float32 by a DequantizeLinear node: computed in float32 as before, downloaded in about a
    third of the bytes (the weight-only quantisation that TensorFlow.js's converter offers and face-api.js ships).
    Activations are untouched, so embeddings stay close to float32's (docs/browser.md has the measurement).
    Depthwise and grouped convolutions stay float32: few weights, and the layers that lose most in int8 (Sheng et
    al., "A Quantization-Friendly Separable Convolution for MobileNets", 2018; measured on V1-1.3-1: the smallest
    cosine to float32 over the ORL faces 0.9989 with them in int8, 0.9993 without, for 6 % more bytes). So are
    weights already quantised, shared between layers of other layouts, or of fewer than ``min_size`` numbers; a
    model with nothing to compress is returned as it is."""
    onnx, _ = _require_onnx()
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(data)
    graph = proto.graph
    if max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0) < 13:
        raise OnnxError("weight compression needs opset 13 or newer (per-channel DequantizeLinear)")
    initializers = {t.name: t for t in graph.initializer}
    axes: dict[str, int | None] = {}  # weight -> the axis of its output channels (None: kept float32)
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        if next((a.i for a in node.attribute if a.name == "group"), 1) > 1:
            axes[node.input[1]] = None
            continue
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        outputs = 0 if node.op_type == "Conv" or (node.op_type == "Gemm" and trans_b) else 1
        name = node.input[1]
        axes[name] = outputs if axes.get(name, outputs) == outputs else None
    dequantize = []
    for name, axis in axes.items():
        weight = numpy_helper.to_array(initializers[name])
        if axis is None or weight.dtype != np.float32 or weight.ndim < 2 or weight.size < min_size:
            continue
        other = tuple(i for i in range(weight.ndim) if i != axis)
        peak = np.abs(weight).max(axis=other, keepdims=True)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        quantised = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantised, f"{name}_int8"),
                numpy_helper.from_array(scale.reshape(-1), f"{name}_scale"),
                numpy_helper.from_array(np.zeros(scale.size, np.int8), f"{name}_zero"),
            ]
        )
        inputs = [f"{name}_int8", f"{name}_scale", f"{name}_zero"]
        dequantize.append(helper.make_node("DequantizeLinear", inputs, [name], f"{name}_dequantize", axis=axis))
    if not dequantize:
        return data
    nodes = [*dequantize, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    meta = next((json.loads(p.value) for p in proto.metadata_props if p.key == METADATA_KEY), None)
    if meta is not None:
        meta["onnx"] = {**meta.get("onnx", {}), "weights": f"int8 per output channel ({len(dequantize)} tensors)"}
        _set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def float_block_nodes(node_names: list[str], keep_float_blocks: int) -> list[str]:
    """The nodes that stay float32 with ``keep_float_blocks``: the stem and blocks 0..K-1, found by the torch module
    paths in the node names (/stem/..., /blocks/blocks.3/...). A part that matches no node is an :class:`OnnxError`
    (a graph whose names do not follow the module paths would otherwise be quantised whole, silently)."""
    if not keep_float_blocks:
        return []
    prefixes = ["/stem/"] + [f"/blocks/blocks.{i}/" for i in range(keep_float_blocks)]
    unmatched = [p for p in prefixes if not any(name.startswith(p) for name in node_names)]
    if unmatched:
        raise OnnxError(
            f"--keep-float-blocks {keep_float_blocks}: no node of the graph is named {', '.join(unmatched)}...; "
            "the file's node names do not follow the model's module paths (was it exported by ghostfacenets?)"
        )
    return [name for name in node_names if name.startswith(tuple(prefixes))]


def quantize_int8(
    source: str | Path,
    path: str | Path,
    calibration: np.ndarray,
    method: str = "percentile",
    keep_float_blocks: int = 0,
    per_channel: bool = True,
    batch_size: int = 16,
) -> Path:
    """Post-training static int8 quantisation (onnxruntime, QDQ format, uint8 activations, int8 weights per output
    channel in a 7-bit range, which AVX2's integer kernels cannot saturate) of an exported float32 ONNX file,
    calibrated on uint8 RGB face crops (N, H, W, 3).

    ``method``: "minmax" (fast, sensitive to outliers), "percentile" (99.999 %) or "entropy".
    ``keep_float_blocks``: leave the stem and the first K of the 16 blocks in float32; the early, high-resolution
    layers are where int8 loses most (docs/deployment.md), and also where most of the time goes.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if method not in CALIBRATION_METHODS:
        raise GhostFaceNetsError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if not 0 <= keep_float_blocks <= 16:
        raise GhostFaceNetsError(f"keep_float_blocks must be between 0 and 16, got {keep_float_blocks}")
    if calibration.ndim != 4 or calibration.dtype != np.uint8 or len(calibration) == 0:
        raise GhostFaceNetsError(
            f"calibration images must be uint8 (N, H, W, 3) with N > 0, got {calibration.dtype} {calibration.shape}"
        )
    source = Path(source)
    meta = read_onnx_metadata(source)
    _require_onnx()
    # onnxruntime's histogram calibrators stack the batches, so they must all have the same size: the last one is
    # filled up with the first images again.
    batch_size = min(batch_size, len(calibration))
    count = -(-len(calibration) // batch_size) * batch_size
    ordered = calibration[np.arange(count) % len(calibration)]
    batches = [to_array(ordered[i : i + batch_size]) for i in range(0, count, batch_size)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    with tempfile.TemporaryDirectory(prefix="ghostfacenets-quant-") as tmp:
        prepared, quantised = Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        quant_pre_process(str(source), str(prepared))
        excluded = float_block_nodes([n.name for n in _load_proto(prepared).graph.node], keep_float_blocks)
        with contextlib.redirect_stdout(sys.stderr):  # the calibrators print progress, which must not mix with JSON
            quantize_static(
                str(prepared),
                str(quantised),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate,
                nodes_to_exclude=excluded,
                calibration_providers=["CPUExecutionProvider"],
                # weights in 7 bits: x86 CPUs without VNNI (AVX2) multiply uint8 by int8 in pairs summed into int16
                # (vpmaddubsw), which saturates with full-range weights; measured on an AVX2 EPYC, the random-weight
                # fixture's agreement with float32 fell from 0.98 to 0.80 without it
                reduce_range=True,
            )
        proto = _load_proto(quantised)
    meta["onnx"] = {
        **meta.get("onnx", {}),
        "precision": "int8",
        "converted_from": source.name,
        "quantization": {
            "tool": "onnxruntime quantize_static",
            "format": "QDQ",
            "activations": "uint8",
            "weights": ("int8 per channel" if per_channel else "int8 per tensor") + ", 7-bit range",
            "calibration_method": method,
            "calibration_images": len(calibration),
            "float32_blocks": keep_float_blocks,
        },
    }
    _set_metadata(proto, meta)
    return _save(proto, Path(path))
