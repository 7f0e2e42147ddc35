"""How the liveness model runs: the package's one backend rule, as for the face embedders.

:func:`load_liveness` with ``backend="auto"`` picks

* an ``.onnx`` file: onnxruntime; a ``.pte`` file: ExecuTorch; a ``.tflite`` file: LiteRT (files written by
  ``ghostfacenets export --liveness``; the last two on the CPU, the mobile extra);
* the shipped weights or a liveness ``.safetensors`` file on the CPU: ``"executorch"`` (lowered to XNNPACK once per
  weights and cached) with the mobile extra, else ``"onnxruntime"`` (exported in memory) with the onnx extra, else
  ``"fused"`` PyTorch; on a GPU: ``"fused"``.

``backend`` may also name ``"eager"`` (the networks as built, for reference), ``"fused"``, ``"onnxruntime"`` or
``"executorch"``. Every backend takes the same uint8 BGR patches and agrees with eager PyTorch within 1e-5 (tests).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GhostFaceNetsError, ModelFileError
from ..models.minifasnet import INPUT_SIZE, NUM_CLASSES
from .export import INPUT_NAMES, METADATA_METHOD, METHOD, OUTPUT_NAME
from .model import METADATA_KEY, MiniFASNetFusion, load_liveness_model

BACKENDS = ("auto", "eager", "fused", "executorch", "onnxruntime")
FILE_RUNTIMES = {".onnx": "onnxruntime", ".pte": "executorch", ".tflite": "litert"}
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LivenessModel:
    """The liveness networks ready to run: :meth:`probabilities` of uint8 BGR patches. ``backend`` says how they run,
    ``metadata`` is the weights' or the file's (source, licence, threshold)."""

    def __init__(self, runner: Runner, name: str, backend: str, metadata: dict[str, Any]) -> None:
        self._runner = runner
        self.name = name
        self.backend = backend
        self.metadata = metadata

    def probabilities(self, patches_2_7: np.ndarray, patches_4_0: np.ndarray) -> np.ndarray:
        """uint8 BGR patches (N, 80, 80, 3) at 2.7x and 4x the face boxes -> float32 (N, 3) class probabilities
        (class 1 = real face)."""
        shape = (len(patches_2_7), INPUT_SIZE, INPUT_SIZE, 3)
        for patches in (patches_2_7, patches_4_0):
            if patches.dtype != np.uint8 or patches.shape != shape:
                raise GhostFaceNetsError(
                    f"liveness patches must be uint8 BGR {shape} in pairs, got {patches.dtype} {patches.shape}"
                )
        if not len(patches_2_7):
            return np.zeros((0, NUM_CLASSES), np.float32)
        a, b = (np.ascontiguousarray(p.transpose(0, 3, 1, 2), dtype=np.float32) for p in (patches_2_7, patches_4_0))
        return np.asarray(self._runner(a, b), dtype=np.float32).reshape(len(a), NUM_CLASSES)


def _torch_runner(model: MiniFASNetFusion, device: torch.device) -> Runner:
    model = model.to(device).eval()

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)).float().cpu().numpy()

    return run


def _onnx_runner(source: bytes | str, threads: int | None, label: str) -> tuple[Runner, dict[str, Any]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise ModelFileError(f"{label}: not a usable ONNX model ({exc})") from None
    names = [i.name for i in session.get_inputs()]
    if sorted(names) != sorted(INPUT_NAMES) or OUTPUT_NAME not in [o.name for o in session.get_outputs()]:
        raise ModelFileError(f"{label}: not a liveness model (inputs {names}; expected {', '.join(INPUT_NAMES)})")
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    metadata = json.loads(raw) if raw else {}

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, (a, b))))[0]

    return run, metadata


def _executorch_runner(program_bytes: bytes, label: str) -> tuple[Runner, dict[str, Any]]:
    from ..export.executorch import load_method, load_program

    program = load_program(program_bytes)
    if METHOD not in program.method_names:
        raise ModelFileError(f"{label}: ExecuTorch program without a {METHOD} method")
    meta = program.metadata(METHOD)
    if meta.num_inputs() != 2 or meta.num_outputs() != 1:
        raise ModelFileError(f"{label}: not a liveness program (expected two inputs and one output)")
    method = load_method(program, METHOD, label)
    metadata: dict[str, Any] = {}
    if METADATA_METHOD in program.method_names:
        metadata = dict(json.loads(load_method(program, METADATA_METHOD, label).execute([])[0]))
    lock = threading.Lock()  # a method's planned memory serves one call at a time

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        _ = program  # the methods need their program alive
        with lock:
            rows = [
                method.execute((torch.from_numpy(a[i : i + 1]), torch.from_numpy(b[i : i + 1])))[0]
                for i in range(len(a))
            ]
        return torch.cat(rows).numpy()

    return run, metadata


def _litert_runner(path: Path, threads: int | None) -> tuple[Runner, dict[str, Any]]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise GhostFaceNetsError(
            "running .tflite files needs the mobile extra: pip install 'ghostfacenets[mobile]'"
        ) from None
    from ..export.litert import LiteRTError, read_litert_metadata

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: not a usable LiteRT model ({exc})") from None
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    order = [next((d for n, d in inputs.items() if want in n), None) for want in INPUT_NAMES]
    outputs = interpreter.get_output_details()
    if len(inputs) != 2 or len(outputs) != 1:
        raise ModelFileError(f"{path}: not a liveness model (expected two inputs and one output)")
    if None in order:  # the converter names inputs args_0, args_1 in the module's order
        order = [inputs[n] for n in sorted(inputs)]
    try:
        metadata = read_litert_metadata(path)
    except LiteRTError:
        metadata = {}

    lock = threading.Lock()  # an interpreter runs one call at a time

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        rows = []
        with lock:
            for i in range(len(a)):
                for detail, x in zip(order, (a, b)):
                    assert detail is not None
                    interpreter.set_tensor(detail["index"], np.ascontiguousarray(x[i : i + 1].transpose(0, 2, 3, 1)))
                interpreter.invoke()
                rows.append(interpreter.get_tensor(outputs[0]["index"]).copy())
        return np.concatenate(rows)

    return run, metadata


def load_liveness(
    source: str | Path | MiniFASNetFusion | None = None,
    device: str | torch.device | None = None,
    backend: str = "auto",
    threads: int | None = None,
) -> LivenessModel:
    """The liveness model of ``source`` (None: the shipped weights; a liveness ``.safetensors`` file, an exported
    ``.onnx`` / ``.pte`` / ``.tflite`` file, or a :class:`MiniFASNetFusion`) run by ``backend`` (see the module
    docstring). ``threads``: onnxruntime's or LiteRT's threads per call (default: all cores)."""
    from ..export.executorch import executorch_available
    from ..export.onnx import onnx_available
    from ..inference import resolve_device

    if backend not in BACKENDS:
        raise GhostFaceNetsError(f"unknown liveness backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    suffix = Path(source).suffix.lower() if isinstance(source, (str, Path)) else ""
    if suffix in FILE_RUNTIMES:
        runtime, path = FILE_RUNTIMES[suffix], Path(str(source))
        if backend not in ("auto", runtime):
            raise GhostFaceNetsError(f"{path}: a {suffix} file runs with {runtime}, not with backend {backend!r}")
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file")
        if device is not None and resolve_device(device, check_available=False).type != "cpu":
            raise GhostFaceNetsError(f"{path}: the liveness files run on the CPU, not on {device}")
        if suffix == ".onnx":
            run, metadata = _onnx_runner(str(path), threads, str(path))
        elif suffix == ".pte":
            from ..export.executorch import _require

            _require()
            run, metadata = _executorch_runner(path.read_bytes(), str(path))
        else:
            run, metadata = _litert_runner(path, threads)
        return LivenessModel(run, path.name, runtime, metadata)
    model = source if isinstance(source, MiniFASNetFusion) else load_liveness_model(source)
    name = Path(str(source)).name if isinstance(source, (str, Path)) else "MiniFASNet (shipped weights)"
    where = resolve_device(device) if device is not None else torch.device("cpu")
    if backend == "auto":
        backend = "fused"
        if where.type == "cpu":
            backend = "executorch" if executorch_available() else "onnxruntime" if onnx_available() else "fused"
    if backend in ("executorch", "onnxruntime") and where.type != "cpu":
        raise GhostFaceNetsError(f"the {backend} liveness backend runs on the CPU, not on {where}")
    if backend == "eager":
        run = _torch_runner(model.eval(), where)
    elif backend == "fused":
        run = _torch_runner(model.fused(), where)
    elif backend == "onnxruntime":
        from .export import onnx_bytes

        run, _ = _onnx_runner(onnx_bytes(model), threads, name)
    else:
        from .export import executorch_program

        run, _ = _executorch_runner(executorch_program(model), name)
    return LivenessModel(run, name, backend, dict(model.metadata))
