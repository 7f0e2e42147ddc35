"""LiteRT (TensorFlow Lite) export for Android and other devices: float32, float16 weights and full-integer int8,
converted with Google's PyTorch converter ``litert-torch`` and run with Google's runtime ``ai-edge-litert``.

Contract of every written ``.tflite`` file: one input, batch 1, NHWC (1, 112, 112, 3), RGB normalised as
(pixel - 127.5) / 128; one output (1, D), the raw embedding (not L2-normalised). float32 and float16 files take and
give float32 (float16 files store float16 weights, expanded to float32 when the interpreter loads them). int8 files
are full-integer: int8 input and output with the scale and zero point stored on the tensors (and repeated in the
metadata). Convolutions, concatenations, pooling and V2's attention gate run in int8; PReLU runs in float32
between quantise and dequantise operators (litert-torch's quantizer does not quantise it). The metadata entry
``ghostfacenets`` (JSON) states all of it; :func:`read_litert_metadata` reads it back.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import to_array
from ..errors import GhostFaceNetsError, ModelFileError
from ..files import atomic_write
from ..models.fuse import fuse_model
from ..models.ghostfacenet import GhostFaceNet
from .mobile import (
    CALIBRATION_BATCH,
    check_calibration,
    import_quietly,
    mobile_metadata,
    progress_to_stderr,
    quiet_lowering,
)

METADATA_NAME = "ghostfacenets"
PRECISIONS = ("float32", "float16", "int8")


class LiteRTError(GhostFaceNetsError):
    """A LiteRT file that cannot be written or read."""


def litert_available() -> bool:
    """Whether the converter and the runtime of the mobile extra are installed."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError:
        return False
    return True


def _require(module: str) -> Any:
    try:
        return import_quietly(module)
    except ImportError:
        raise LiteRTError(
            f"LiteRT needs the mobile extra ({module} is missing): pip install 'ghostfacenets[mobile]'"
        ) from None


class ChannelsLast(nn.Module):
    """A model of NCHW input as a model of NHWC input, the layout of Android bitmaps and of LiteRT's kernels (the
    converter removes the transposition)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


def _float_model(model: GhostFaceNet) -> nn.Module:
    if not isinstance(model, GhostFaceNet):
        raise LiteRTError(f"LiteRT export expects a GhostFaceNet, got {type(model).__name__}")
    return ChannelsLast(fuse_model(copy.deepcopy(model).float().cpu(), inplace=True)).eval()


class _ExplicitPadding(nn.Module):
    """A strided convolution with its symmetric padding as a separate zero pad (which the quantizer below gives the
    scale of its input; LiteRT's converter would otherwise insert a pad with a scale of its own)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        height, width = int(conv.padding[0]), int(conv.padding[1])
        conv.padding = (0, 0)
        self.pad = (width, width, height, height)
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


def _explicit_padding(module: nn.Module) -> nn.Module:
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.padding != (0, 0) and child.stride != (1, 1):
                setattr(parent, name, _ExplicitPadding(child))
    return module


# Operators that only move, pad or resample values: int8 in and out with the scale of their input, as LiteRT's int8
# kernels require (litert-torch's quantizer leaves them out, so V2's DFC attention could not be converted).
_SAME_SCALE_OPS = (
    torch.ops.aten.constant_pad_nd.default,
    torch.ops.aten.pad.default,
    torch.ops.aten.avg_pool2d.default,
    torch.ops.aten.upsample_bilinear2d.vec,
)


def _quantizer() -> Any:
    """litert-torch's PT2E quantizer (int8 per-channel symmetric weights, int8 activations) that also quantises the
    operators of :data:`_SAME_SCALE_OPS` with their input's scale."""
    import_quietly("torchao.quantization.pt2e")
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    class Quantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            activation = self.global_config.input_activation
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target not in _SAME_SCALE_OPS:
                    continue
                if "quantization_annotation" in node.meta:
                    continue
                source = node.args[0]
                produced = getattr(source.meta.get("quantization_annotation"), "output_qspec", None)
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={source: SharedQuantizationSpec(source) if produced is not None else activation},
                    output_qspec=SharedQuantizationSpec((source, node)),
                    _annotated=True,
                )
            return model

    return Quantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))


@quiet_lowering()
def _quantized_int8(module: nn.Module, calibration: np.ndarray, sample: torch.Tensor) -> tuple[nn.Module, Any]:
    """``module`` quantised to int8 with :func:`_quantizer`, calibrated on NHWC float batches; returns the quantised
    module and the quantizer ``litert_torch.convert`` needs."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _quantizer()
    # Captured with a dynamic batch so that calibration runs in batches (the histogram observers cost per call).
    batch = torch.export.Dim("batch", min=1, max=CALIBRATION_BATCH)
    graph = torch.export.export(
        _explicit_padding(module), (sample.expand(2, -1, -1, -1),), dynamic_shapes=({0: batch},)
    ).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for start in range(0, len(calibration), CALIBRATION_BATCH):
            prepared(torch.from_numpy(to_array(calibration[start : start + CALIBRATION_BATCH])).permute(0, 2, 3, 1))
    return convert_pt2e(prepared, fold_quantize=False), quantizer


def _store_weights(tflite: bytes, config: Any, operations: tuple[str, ...], algorithm: str) -> bytes:
    """``tflite`` with the weights of ``operations`` stored as ``config`` says (AI Edge Quantizer), each turned back
    into float32 by a DEQUANTIZE operator that XNNPACK folds when it loads the model: computed in float32."""
    from ai_edge_quantizer import quantizer

    stored = quantizer.Quantizer(bytearray(tflite))
    for operation in operations:
        stored.update_quantization_recipe(
            regex=".*", operation_name=operation, op_config=config, algorithm_key=algorithm
        )
    with progress_to_stderr():
        return bytes(stored.quantize(enable_progress_report=False).quantized_model)


def _float16_weights(tflite: bytes) -> bytes:
    """The float32 model with float16 weights (AI Edge Quantizer's float casting of convolution weights)."""
    from ai_edge_quantizer import qtyping

    float16 = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
        compute_precision=qtyping.ComputePrecision.FLOAT,
        explicit_dequantize=True,
    )
    return _store_weights(tflite, float16, (qtyping.TFLOperationName.ALL_SUPPORTED,), "float_casting")


def int8_weights(tflite: bytes, min_size: int = 1024) -> bytes:
    """The float32 model with its convolution and fully connected weights stored in int8, symmetric per output
    channel: about a third of the bytes, every activation still float32. Depthwise convolutions and weights of fewer
    than ``min_size`` numbers (the first convolution, on the image) stay float32, as in
    :func:`ghostfacenets.export.onnx.compress_weights`."""
    from ai_edge_quantizer import qtyping

    int8 = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(
            num_bits=8,
            symmetric=True,
            granularity=qtyping.QuantGranularity.CHANNELWISE,
            dtype=qtyping.TensorDataType.INT,
        ),
        compute_precision=qtyping.ComputePrecision.FLOAT,
        explicit_dequantize=True,
        min_weight_elements=min_size,
    )
    operations = (qtyping.TFLOperationName.CONV_2D, qtyping.TFLOperationName.FULLY_CONNECTED)
    return _store_weights(tflite, int8, operations, "min_max_uniform_quantize")


@quiet_lowering()
def litert_bytes(model: GhostFaceNet, calibration: np.ndarray | None = None) -> bytes:
    """The ``.tflite`` flatbuffer of ``model`` (BatchNorm folded, NHWC batch-1 input), without metadata: float32, or
    full-integer int8 calibrated on ``calibration`` (uint8 RGB aligned crops (N, H, W, 3)) when given."""
    litert_torch = _require("litert_torch")
    module = _float_model(model)
    size = model.config.input_size
    sample = torch.zeros(1, size, size, 3)
    with progress_to_stderr():
        if calibration is None:
            return bytes(litert_torch.convert(module, (sample,)).model_content())
        from litert_torch.quantize.quant_config import QuantConfig

        quantised, quantizer = _quantized_int8(module, check_calibration(calibration, size), sample)
        edge = litert_torch.convert(quantised, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
        return bytes(edge.model_content())


def _tensor_facts(tflite: bytes) -> dict[str, Any]:
    """Input and output tensors of a flatbuffer as LiteRT's interpreter reports them (shape, dtype, quantisation)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    facts = {}
    for role, details in (("input", interpreter.get_input_details()), ("output", interpreter.get_output_details())):
        if len(details) != 1:
            raise LiteRTError(f"expected one {role} tensor, the converter made {len(details)}")
        scale, zero_point = details[0]["quantization"]
        facts[role] = {"shape": [int(d) for d in details[0]["shape"]], "dtype": np.dtype(details[0]["dtype"]).name}
        if scale:
            facts[role]["quantization"] = {
                "scale": float(scale),
                "zero_point": int(zero_point),
                "real_value": "scale * (q - zero_point)",
            }
    return facts


def with_metadata(tflite: bytes, meta: dict[str, Any], description: str | None = None) -> bytes:
    """``tflite`` with ``meta`` as the JSON metadata entry ``ghostfacenets`` (replacing an earlier one) and a short
    description (default: the GhostFaceNet's), written with the flatbuffer schema that ships with ai-edge-litert."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(tflite, 0))
    if any((b.offset or 0) > 1 for b in model.buffers):  # data stored past the flatbuffer would be lost
        raise LiteRTError("cannot add metadata to a .tflite file whose weights lie outside its flatbuffer")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    model.description = (
        description or f"GhostFaceNet {meta.get('architecture', '')} face embedding ({meta['litert']['precision']})"
    )
    builder = flatbuffers.Builder(len(tflite) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def export_litert(
    model: GhostFaceNet, path: str | Path, precision: str = "float32", calibration: np.ndarray | None = None
) -> Path:
    """Write ``model`` as a ``.tflite`` file (see the module docstring for the contract) with its metadata; atomic.

    ``precision``: "float32", "float16" or "int8" (full-integer, calibrated on ``calibration``: uint8 RGB aligned
    crops (N, H, W, 3))."""
    litert_torch = _require("litert_torch")
    if precision not in PRECISIONS:
        raise LiteRTError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise LiteRTError("int8 export needs calibration faces (uint8 RGB crops)")
    tflite = litert_bytes(model, calibration if precision == "int8" else None)
    facts = _tensor_facts(tflite)
    extra: dict[str, Any] = {"converter": f"litert-torch {litert_torch.__version__}"}
    if precision == "float16":
        extra["weights"] = "float16 (expanded to float32 at load)"
    if precision == "int8":
        extra["quantization"] = {
            "tool": "litert-torch PT2E quantizer",
            "weights": "int8 symmetric per channel",
            "activations": "int8",
            "calibration_images": 0 if calibration is None else len(calibration),
        }
    meta = mobile_metadata(model, "litert", precision, "NHWC", facts["input"], facts["output"], **extra)
    path = Path(path)
    tflite = with_metadata(tflite, meta)
    if precision == "float16":  # after the metadata: the quantizer keeps it and stores weights past the flatbuffer
        tflite = _float16_weights(tflite)
    with atomic_write(path, "wb") as f:
        f.write(tflite)
    return path


def read_litert_metadata(path: str | Path) -> dict[str, Any]:
    """The ``ghostfacenets`` metadata of a ``.tflite`` file written by :func:`export_litert`."""
    schema = _require("ai_edge_litert.schema_py_generated")

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    data = path.read_bytes()
    if data[4:8] != b"TFL3":
        raise ModelFileError(f"{path}: not a LiteRT (.tflite) flatbuffer")
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_NAME.encode():
                buffer = model.Buffers(entry.Buffer())
                # Inline data, or (files over 2 GB, or rewritten by AI Edge Quantizer) an offset past the flatbuffer.
                raw = (
                    buffer.DataAsNumpy().tobytes()
                    if buffer.DataLength()
                    else data[buffer.Offset() : buffer.Offset() + buffer.Size()]
                )
                return json.loads(raw)
    except Exception as exc:  # a damaged flatbuffer raises whatever the generated reader trips over
        raise ModelFileError(f"{path}: unreadable LiteRT file ({exc})") from None
    raise LiteRTError(f"{path}: .tflite file without ghostfacenets metadata (not exported by ghostfacenets)")
