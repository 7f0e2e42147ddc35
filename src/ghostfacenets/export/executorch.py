"""ExecuTorch export (PyTorch's on-device runtime) with the XNNPACK delegate, the CPU kernels phones use: float32
and int8 (PT2E quantisation with the XNNPACK quantizer, extended to the zero pads and PReLUs of GhostFaceNets).

Contract of every written ``.pte`` program: method ``forward`` takes one float32 NCHW tensor (N, 3, 112, 112), RGB
normalised as (pixel - 127.5) / 128, N from 1 to the file's ``max_batch`` (1 unless asked), and returns the raw
embedding (N, D) float32 (not L2-normalised); int8 programs quantise inside, so they take and give float32 too.
Method ``ghostfacenets_metadata`` returns the metadata as one JSON string (:func:`read_executorch_metadata`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.transforms import to_array
from ..errors import GhostFaceNetsError, ModelFileError
from ..files import atomic_write
from ..models.fuse import fuse_model
from ..models.ghostfacenet import GhostFaceNet
from .mobile import (
    CALIBRATION_BATCH,
    cached_conversion,
    check_calibration,
    import_quietly,
    mobile_metadata,
    progress_to_stderr,
    quiet_lowering,
)

METADATA_METHOD = "ghostfacenets_metadata"
PRECISIONS = ("float32", "int8")
_ANNOTATION = "quantization_annotation"
_PADS = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)


class ExecuTorchError(GhostFaceNetsError):
    """An ExecuTorch program that cannot be written or read."""


# ExecuTorch's runtime extension. Imported alone: ``executorch.runtime`` imports the whole exporter and quantisation
# stack first (torchao included, which logs failures to load its CUDA kernels and a torch deprecation warning), none
# of which running a program needs.
NATIVE_RUNTIME = "executorch.extension.pybindings._C"
# What the runtime prints while it starts its thread pool: cpuinfo's reading of ARM-only files, informational on
# other CPUs. Dropped; anything else printed then is passed on.
_STARTUP_NOISE = re.compile(r"^\[cpuinfo_utils\.cpp:\d+\] ")


def executorch_available() -> bool:
    """Whether ExecuTorch (exporter and Python runtime, the mobile extra) is installed."""
    try:
        return importlib.util.find_spec(NATIVE_RUNTIME) is not None
    except ImportError:
        return False


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Native code's writes to file descriptor 2 held back while the block runs; the list it gives holds their
    lines afterwards, for the caller to pass on or to put into its own error (nothing is held back where descriptor
    2 cannot be redirected)."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lines
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines.extend(held.read().decode(errors="replace").splitlines())


def _pass_on(lines: list[str], noise: re.Pattern[str] | None = None) -> None:
    for line in lines:
        if noise is None or not noise.match(line):
            print(line, file=sys.stderr)


@functools.lru_cache(maxsize=1)
def native_runtime() -> Any:
    """ExecuTorch's runtime extension (see :data:`NATIVE_RUNTIME`) with its thread pool started."""
    _require()
    import torch  # noqa: F401  # the extension links against libtorch, which torch loads

    module = importlib.import_module(NATIVE_RUNTIME)
    with _native_stderr() as lines:
        module._threadpool_get_thread_count()
    _pass_on(lines, _STARTUP_NOISE)
    return module


class Program:
    """A loaded ExecuTorch program (the runtime extension's, as ``executorch.runtime.Program`` wraps it): its
    ``method_names``, ``load_method(name)`` and ``metadata(name)``; it keeps the program's bytes alive."""

    def __init__(self, native: Any, data: bytes) -> None:
        self._native = native
        self._data = data
        self.method_names = {native.get_method_name(i) for i in range(native.num_methods())}

    def load_method(self, name: str) -> Method:
        return Method(self._native.load_method(name))

    def metadata(self, name: str) -> Any:
        return self._native.method_meta(name)


class Method:
    """A loaded method: ``execute(inputs)`` returns its outputs."""

    def __init__(self, native: Any) -> None:
        self._native = native

    def execute(self, inputs: Sequence[Any]) -> Sequence[Any]:
        return self._native(inputs)


def _require() -> None:
    if not executorch_available():
        raise ExecuTorchError("ExecuTorch needs the mobile extra: pip install 'ghostfacenets[mobile]'")


def import_exporter() -> None:
    """Import ExecuTorch's exporter (and torchao, which it imports) quietly (:func:`.mobile.import_quietly`)."""
    _require()
    import_quietly("executorch.exir")
    import_quietly("torchao.quantization.pt2e")


def _quantizer() -> Any:
    """ExecuTorch's XNNPACK quantizer (int8 per-channel symmetric weights, int8 activations) that also quantises the
    two operators GhostFaceNets add, which it leaves in float32 between conversions (a quarter of the int8 run time
    of V1-1.3-1): the zero padding before V1's strided convolutions, with its input's scale (XNNPACK then folds it
    into the convolution), and PReLU, int8 in and out with its slopes int8 per tensor."""
    import_exporter()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        QuantizationSpec,
        SharedQuantizationSpec,
    )

    slopes = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,
        observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12),
    )

    class Quantizer(XNNPACKQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            activation = self.global_config.input_activation
            for node in model.graph.nodes:
                if node.op != "call_function" or _ANNOTATION in node.meta:
                    continue
                if node.target == torch.ops.aten.prelu.default:
                    source, weight = node.args
                    node.meta[_ANNOTATION] = QuantizationAnnotation(
                        input_qspec_map={source: activation, weight: slopes},
                        output_qspec=self.global_config.output_activation,
                        _annotated=True,
                    )
                elif node.target in _PADS:
                    source = node.args[0]
                    node.meta[_ANNOTATION] = QuantizationAnnotation(
                        input_qspec_map={source: activation},
                        output_qspec=SharedQuantizationSpec((source, node)),
                        _annotated=True,
                    )
            return model

    return Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _partitioner() -> Any:
    """XNNPACK's partitioner, also taking the int8 zero pads and PReLUs that :func:`_quantizer` makes (its own
    configurations of these two operators accept float32 only; XNNPACK's runtime runs both in int8)."""
    import_exporter()
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import (
        ConstantPadConfig,
        GenericNodePartitionerConfig,
    )
    from executorch.backends.xnnpack.partition.config.node_configs import PreluConfig
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.utils.quant_utils import is_dequant
    from executorch.backends.xnnpack.utils.utils import is_param_node

    both = [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]

    class Int8Pad(ConstantPadConfig):
        def supported_precision_types(self) -> list[Any]:
            return both

    class Int8PReLU(GenericNodePartitionerConfig):
        target_name = "prelu.default"

        def check_constraints(self, node: torch.fx.Node, program: torch.export.ExportedProgram) -> bool:
            slopes = node.all_input_nodes[1]  # a parameter, or the dequantisation of one
            if is_dequant(slopes):
                slopes = slopes.all_input_nodes[0]
            return bool(self.check_common_constraints(node, program)) and bool(is_param_node(program, slopes))

        def get_original_aten(self) -> Any:
            return torch.ops.aten.prelu.default

        def supported_precision_types(self) -> list[Any]:
            return both

        def get_node_and_deps(self, node: torch.fx.Node, program: torch.export.ExportedProgram) -> list[Any]:
            nodes = list(super().get_node_and_deps(node, program))
            slopes = node.all_input_nodes[1]  # with the quantised parameter behind its dequantisation
            params = [dep for dep in slopes.all_input_nodes if is_param_node(program, dep)]
            return nodes + [dep for dep in (slopes, *params) if dep not in nodes]

    replaced = {ConstantPadConfig: Int8Pad, PreluConfig: Int8PReLU}
    return XnnpackPartitioner(configs=[replaced.get(config, config) for config in ALL_PARTITIONER_CONFIGS])


@quiet_lowering()
def _quantized_int8(module: torch.nn.Module, calibration: np.ndarray, size: int) -> torch.nn.Module:
    """``module`` quantised for XNNPACK with :func:`_quantizer`, calibrated in batches (the histogram observers cost
    per call)."""
    import_exporter()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = torch.export.Dim("batch", min=1, max=CALIBRATION_BATCH)
    graph = torch.export.export(module, (torch.zeros(2, 3, size, size),), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(graph, _quantizer())
    with torch.no_grad():
        for start in range(0, len(calibration), CALIBRATION_BATCH):
            prepared(torch.from_numpy(to_array(calibration[start : start + CALIBRATION_BATCH])))
    return convert_pt2e(prepared)


@quiet_lowering()
def executorch_bytes(
    model: GhostFaceNet,
    precision: str = "float32",
    calibration: np.ndarray | None = None,
    max_batch: int = 1,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """The ``.pte`` program of ``model`` (BatchNorm folded, fully delegated to XNNPACK) for batches of 1 to
    ``max_batch`` (at most 15: ExecuTorch plans the memory of a GhostFaceNet for no more), with ``metadata`` as the
    ``ghostfacenets_metadata`` method when given.

    ``precision``: "float32" or "int8" (needs ``calibration``: uint8 RGB aligned crops (N, H, W, 3))."""
    import_exporter()
    from executorch.exir import to_edge_transform_and_lower

    if precision not in PRECISIONS:
        raise ExecuTorchError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not isinstance(model, GhostFaceNet):
        raise ExecuTorchError(f"ExecuTorch export expects a GhostFaceNet, got {type(model).__name__}")
    if not 1 <= max_batch <= 15:
        raise ExecuTorchError(f"max_batch must be between 1 and 15, got {max_batch}")
    size = model.config.input_size
    module: torch.nn.Module = fuse_model(copy.deepcopy(model).float().cpu(), inplace=True).eval()
    if precision == "int8":
        if calibration is None:
            raise ExecuTorchError("int8 export needs calibration faces (uint8 RGB crops)")
        module = _quantized_int8(module, check_calibration(calibration, size), size)
    if max_batch > 1:
        dynamic = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
        program = torch.export.export(module, (torch.zeros(2, 3, size, size),), dynamic_shapes=dynamic)
    else:
        program = torch.export.export(module, (torch.zeros(1, 3, size, size),))
    constants = {METADATA_METHOD: json.dumps(metadata)} if metadata is not None else None
    with progress_to_stderr():
        edge = to_edge_transform_and_lower(program, partitioner=[_partitioner()], constant_methods=constants)
        return bytes(edge.to_executorch().buffer)


def export_executorch(
    model: GhostFaceNet,
    path: str | Path,
    precision: str = "float32",
    calibration: np.ndarray | None = None,
    max_batch: int = 1,
) -> Path:
    """Write ``model`` as an ExecuTorch ``.pte`` program for XNNPACK (see the module docstring) with its metadata;
    atomic. int8 is calibrated on ``calibration`` (uint8 RGB aligned crops (N, H, W, 3))."""
    _require()
    if not isinstance(model, GhostFaceNet):
        raise ExecuTorchError(f"ExecuTorch export expects a GhostFaceNet, got {type(model).__name__}")
    size, dim = model.config.input_size, model.config.embedding_size
    batch = "N" if max_batch > 1 else 1
    extra: dict[str, Any] = {
        "delegate": "XNNPACK",
        "method": "forward",
        "max_batch": max_batch,
        "exporter": f"executorch {version('executorch')}",
    }
    if precision == "int8":
        extra["quantization"] = {
            "tool": "PT2E with XNNPACKQuantizer, zero pads and PReLU added",
            "weights": "int8 symmetric per channel",
            "activations": "int8 (quantised inside; input and output stay float32)",
            "calibration_images": 0 if calibration is None else len(calibration),
        }
    meta = mobile_metadata(
        model,
        "executorch",
        precision,
        "NCHW",
        {"shape": [batch, 3, size, size], "dtype": "float32"},
        {"shape": [batch, dim], "dtype": "float32"},
        **extra,
    )
    program = executorch_bytes(model, precision, calibration, max_batch, meta)
    try:  # XNNPACK checks the program only when a method loads: refuse to write one that cannot run
        load_method(load_program(program), "forward", f"the {precision} program")
    except ModelFileError as exc:
        advice = (
            "; int8 needs a trained model calibrated on aligned face crops (random weights or other calibration "
            "images can give quantisation scales XNNPACK refuses); nothing was written"
            if precision == "int8"
            else "; nothing was written"
        )
        raise ExecuTorchError(f"{exc}{advice}") from None
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(program)
    return path


def load_program(source: str | Path | bytes) -> Program:
    """An ExecuTorch :class:`Program` from a ``.pte`` path or bytes, or a one-line error. Keep it referenced while
    any of its methods is in use (the methods do not keep it alive)."""
    runtime = native_runtime()
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file")
        data, label = path.read_bytes(), str(path)
    else:
        data, label = bytes(source), "program"
    with _native_stderr() as lines:
        try:
            native = runtime._load_program_from_buffer(
                data,
                enable_etdump=False,
                debug_buffer_size=0,
                program_verification=runtime.Verification.InternalConsistency,
            )
        except Exception as exc:  # the runtime raises RuntimeError or ValueError with its own codes
            native, error = None, exc
    if native is None:  # the runtime's own lines say why: in the one-line error, not beside it
        assert error is not None
        raise ModelFileError(f"{label}: not a usable ExecuTorch program ({_why(error, lines)})") from None
    _pass_on(lines)
    return Program(native, data)


def _why(error: BaseException, lines: list[str]) -> str:
    return "; ".join([str(error), *(re.sub(r"^\[[\w.]+:\d+\] ", "", line) for line in lines if line.strip())])


def load_method(program: Program, name: str, label: str) -> Method:
    """Method ``name`` of a loaded program, or a one-line error: the XNNPACK delegate checks its part of the program
    (operators, quantisation parameters) only now."""
    with _native_stderr() as lines:
        try:
            method, error = program.load_method(name), None
        except Exception as exc:  # RuntimeError with the runtime's error code
            method, error = None, exc
    if method is None:
        assert error is not None
        raise ModelFileError(f"{label}: ExecuTorch cannot load its {name} method ({_why(error, lines)})") from None
    _pass_on(lines)
    return method


def read_executorch_metadata(source: str | Path | bytes) -> dict[str, Any]:
    """The ``ghostfacenets`` metadata of a ``.pte`` program written by :func:`export_executorch`."""
    label = str(source) if isinstance(source, (str, Path)) else "program"
    metadata = program_metadata(load_program(source), label)
    if metadata is None:
        raise ExecuTorchError(
            f"{label}: ExecuTorch program without ghostfacenets metadata (not exported by ghostfacenets)"
        )
    return metadata


def program_metadata(program: Program, label: str) -> dict[str, Any] | None:
    """The ``ghostfacenets`` metadata of a loaded program, or None when it has none."""
    if METADATA_METHOD not in program.method_names:
        return None
    return dict(json.loads(load_method(program, METADATA_METHOD, label).execute([])[0]))


def cached_program(model: GhostFaceNet, max_batch: int = 1) -> Path:
    """A float32 ``.pte`` program of ``model``'s current weights for batches up to ``max_batch``, lowered once and
    kept in the package cache (``GHOSTFACENETS_HOME/executorch``, keyed by the weights, the architecture and the
    ExecuTorch version; :func:`~ghostfacenets.export.mobile.cached_conversion`): lowering takes tens of seconds,
    loading milliseconds."""
    _require()
    if not isinstance(model, GhostFaceNet):
        raise ExecuTorchError(f"ExecuTorch export expects a GhostFaceNet, got {type(model).__name__}")
    key = ["embedder", model.config.to_dict(), max_batch, version("executorch")]
    return cached_conversion(
        "executorch", "embedder.pte", key, lambda: executorch_bytes(model, max_batch=max_batch), weights=model
    )
