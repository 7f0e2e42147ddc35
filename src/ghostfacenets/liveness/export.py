"""The liveness model for other runtimes: ONNX (onnxruntime, the browser), ExecuTorch (XNNPACK) and LiteRT, float32.

Contract of every written file: two float32 inputs, the patches at 2.7x and 4x the face box (``patch_2_7``,
``patch_4_0``), 80x80 BGR pixels 0-255 (NCHW (N, 3, 80, 80) for ONNX, N dynamic, and for ExecuTorch, batch 1; NHWC
(1, 80, 80, 3) for LiteRT); one output ``probabilities`` (N, 3), the mean of the two networks' softmax outputs, class
1 = real face. The metadata (``ghostfacenets``, JSON: source, licence, crop geometry, threshold) travels with the
file, as for the face embedders.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import GhostFaceNetsError
from ..export.onnx import OPSET, OnnxPReLU
from ..files import atomic_write, written_by
from ..models.minifasnet import INPUT_SIZE, NUM_CLASSES
from .model import METADATA_KEY, MiniFASNetFusion

INPUT_NAMES = ("patch_2_7", "patch_4_0")
OUTPUT_NAME = "probabilities"
METHOD = "forward"
METADATA_METHOD = "ghostfacenets_metadata"


class LivenessExportError(GhostFaceNetsError):
    """A liveness file that cannot be written."""


def _float_model(model: MiniFASNetFusion) -> MiniFASNetFusion:
    if not isinstance(model, MiniFASNetFusion):
        raise LivenessExportError(f"expected the liveness model (MiniFASNetFusion), got {type(model).__name__}")
    return model.fused().float().cpu()


def _samples(batch: int = 1, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (batch, INPUT_SIZE, INPUT_SIZE, 3) if channels_last else (batch, 3, INPUT_SIZE, INPUT_SIZE)
    return torch.zeros(shape), torch.zeros(shape)


def export_metadata(
    model: MiniFASNetFusion, runtime: str, layout: str, batch: int | str, **extra: Any
) -> dict[str, Any]:
    """The model's metadata with, under ``runtime``, how to feed the file and what it returns."""
    from .. import __version__

    meta = {k: v for k, v in model.metadata.items() if k not in ("format", "format_version")}
    shape: list[int | str] = (
        [batch, INPUT_SIZE, INPUT_SIZE, 3] if layout == "NHWC" else [batch, 3, INPUT_SIZE, INPUT_SIZE]
    )
    meta["preprocessing"] = {**meta.get("preprocessing", {}), "layout": layout}
    meta[runtime] = {
        "precision": "float32",
        "inputs": [
            {"name": name, "shape": shape, "dtype": "float32", "content": f"patch at {scale}x the face box, BGR 0-255"}
            for name, scale in zip(INPUT_NAMES, ("2.7", "4.0"))
        ],
        "output": {"name": OUTPUT_NAME, "shape": [batch, NUM_CLASSES], "dtype": "float32"},
        "exported_by": f"ghostfacenets {__version__} (torch {torch.__version__})",
        **extra,
    }
    return {**meta, **written_by()}


# ------------------------------------------------------------------------------------------------ ONNX
def onnx_bytes(model: MiniFASNetFusion) -> bytes:
    """The ONNX graph (opset 17, dynamic batch, BatchNorm folded, PReLU as onnxruntime runs it fastest) without
    metadata: what :func:`export_liveness_onnx` writes and the onnxruntime backend runs in memory."""
    from ..export.onnx import _require_onnx

    _require_onnx()
    ready = _float_model(model)
    for parent in list(ready.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(parent, name, OnnxPReLU(child))
    buffer = io.BytesIO()
    axes = {name: {0: "N"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as export.onnx uses it
        torch.onnx.export(
            ready,
            _samples(),
            buffer,  # type: ignore[arg-type]  # torch's annotation omits the file objects it accepts
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def export_liveness_onnx(model: MiniFASNetFusion, path: str | Path) -> Path:
    """Write the liveness model as ONNX (see the module docstring) with its metadata; atomic."""
    import onnx
    import onnxslim

    from .. import __version__

    proto = onnxslim.slim(onnx.load_from_string(onnx_bytes(model)))
    meta = export_metadata(model, "onnx", "NCHW", "N", opset=OPSET, simplified_with=f"onnxslim {onnxslim.__version__}")
    del proto.metadata_props[:]
    for key, value in ((METADATA_KEY, json.dumps(meta)), ("license", str(meta.get("license", "")))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "ghostfacenets", __version__
    proto.doc_string = "MiniFASNet face liveness: patches at 2.7x and 4x the face box, BGR 0-255 -> probabilities"
    onnx.checker.check_model(proto)
    with atomic_write(path, "wb") as f:
        f.write(proto.SerializeToString())
    return Path(path)


# ------------------------------------------------------------------------------------------------ ExecuTorch
def executorch_bytes(model: MiniFASNetFusion, metadata: dict[str, Any] | None = None) -> bytes:
    """The batch-1 ``.pte`` program of the liveness model, fully delegated to XNNPACK, with ``metadata`` as the
    ``ghostfacenets_metadata`` method when given."""
    from ..export.executorch import _require
    from ..export.mobile import progress_to_stderr

    _require()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(_float_model(model), _samples())
    constants = {METADATA_METHOD: json.dumps(metadata)} if metadata is not None else None
    with progress_to_stderr():
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=constants)
        return bytes(edge.to_executorch().buffer)


def executorch_program(model: MiniFASNetFusion) -> bytes:
    """The ``.pte`` program of ``model`` with its metadata, lowered once per weights and versions and kept in the
    package cache (``GHOSTFACENETS_HOME/executorch``), since lowering takes tens of seconds and loading
    milliseconds. What ``export --liveness OUT.pte`` writes and the "executorch" backend runs."""
    from ..export.executorch import _require
    from ..export.mobile import cached_conversion

    _require()
    meta = export_metadata(
        model,
        "executorch",
        "NCHW",
        1,
        delegate="XNNPACK",
        method=METHOD,
        exporter=f"executorch {version('executorch')}",
    )
    path = cached_conversion("executorch", "liveness.pte", [meta], lambda: executorch_bytes(model, meta), weights=model)
    return path.read_bytes()


def export_liveness_executorch(model: MiniFASNetFusion, path: str | Path) -> Path:
    """Write the liveness model as an ExecuTorch program for XNNPACK (batch 1) with its metadata; atomic."""
    program = executorch_program(model)
    with atomic_write(path, "wb") as f:
        f.write(program)
    return Path(path)


# ------------------------------------------------------------------------------------------------ LiteRT
class _ChannelsLast(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, patch_2_7: torch.Tensor, patch_4_0: torch.Tensor) -> torch.Tensor:
        return self.model(patch_2_7.permute(0, 3, 1, 2), patch_4_0.permute(0, 3, 1, 2))


def export_liveness_litert(model: MiniFASNetFusion, path: str | Path) -> Path:
    """Write the liveness model as a float32 ``.tflite`` file (batch 1, NHWC) with its metadata; atomic."""
    from ..export.litert import _require, with_metadata
    from ..export.mobile import progress_to_stderr

    litert_torch = _require("litert_torch")
    module = _ChannelsLast(_float_model(copy.deepcopy(model))).eval()
    with progress_to_stderr():
        tflite = bytes(litert_torch.convert(module, _samples(channels_last=True)).model_content())
    meta = export_metadata(model, "litert", "NHWC", 1, converter=f"litert-torch {litert_torch.__version__}")
    tflite = with_metadata(tflite, meta, description="MiniFASNet face liveness (float32)")
    with atomic_write(path, "wb") as f:
        f.write(tflite)
    return Path(path)


EXPORTERS = {".onnx": export_liveness_onnx, ".pte": export_liveness_executorch, ".tflite": export_liveness_litert}


def export_liveness(model: MiniFASNetFusion, path: str | Path) -> Path:
    """Write the liveness model in the format of ``path``'s suffix (.onnx, .pte or .tflite)."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORTERS:
        raise LivenessExportError(f"{path}: the liveness model exports to .onnx, .pte or .tflite files")
    return EXPORTERS[suffix](model, path)
