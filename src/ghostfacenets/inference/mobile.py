"""Embedders of on-device files: an ExecuTorch ``.pte`` program run by ExecuTorch's runtime (XNNPACK), a LiteRT
``.tflite`` file run by LiteRT's interpreter (XNNPACK delegate), both on the CPU, both from the mobile extra."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.transforms import to_array
from ..errors import GhostFaceNetsError, ModelFileError


class ExecuTorchEmbedder:
    """A ``.pte`` program (as ``ghostfacenets export --executorch`` writes it: method ``forward``, float32 NCHW input)
    run by ExecuTorch's Python runtime; batches larger than the program takes run in pieces."""

    def __init__(self, path: str | Path) -> None:
        from ..export.executorch import load_method, load_program, program_metadata

        self.path = Path(path)
        self.name = self.path.name
        self._program = load_program(self.path)  # its methods need it alive
        if "forward" not in self._program.method_names:
            raise ModelFileError(f"{self.path}: ExecuTorch program without a forward method")
        meta = self._program.metadata("forward")
        if meta.num_inputs() != 1 or meta.num_outputs() != 1:
            raise ModelFileError(f"{self.path}: expected one input and one output, got {meta}")
        batch, channels, height, width = meta.input_tensor_meta(0).sizes()
        if channels != 3:
            raise ModelFileError(f"{self.path}: input has {channels} channels, expected 3 (RGB, NCHW)")
        self.max_batch = int(batch)  # the planned (largest) batch
        self.input_size = (int(height), int(width))
        self.embedding_size = int(meta.output_tensor_meta(0).sizes()[-1])
        self._forward = load_method(self._program, "forward", str(self.path))
        self.metadata = program_metadata(self._program, str(self.path)) or {}

    def _run(self, x: torch.Tensor) -> np.ndarray:
        parts = [self._forward.execute((x[i : i + self.max_batch],))[0] for i in range(0, len(x), self.max_batch)]
        return torch.cat(parts).numpy().astype(np.float32, copy=False)

    def embed_batch(self, images: np.ndarray, flip: bool) -> np.ndarray:
        x = to_array(images)
        out = self._run(torch.from_numpy(x))
        if flip:
            out = out + self._run(torch.from_numpy(np.ascontiguousarray(x[..., ::-1])))
        return out


class LiteRTEmbedder:
    """A ``.tflite`` file (batch 1, NHWC; float32, float16 weights or full-integer int8 with the scale and zero
    point of its input and output tensors) run by LiteRT's interpreter with its default XNNPACK delegate."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise GhostFaceNetsError(
                "running .tflite files needs the mobile extra: pip install 'ghostfacenets[mobile]'"
            ) from None
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such file")
        try:
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{self.path}: not a usable LiteRT model ({exc})") from None
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][3] != 3:
            raise ModelFileError(
                f"{self.path}: expected one NHWC RGB input and one output, got "
                f"{[tuple(i['shape']) for i in inputs]} -> {[tuple(o['shape']) for o in outputs]}"
            )
        self._input: dict[str, Any] = inputs[0]
        self._output: dict[str, Any] = outputs[0]
        self.batch = int(self._input["shape"][0])
        self.input_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        self.embedding_size = int(self._output["shape"][-1])
        from ..export.litert import LiteRTError, read_litert_metadata

        try:
            self.metadata = read_litert_metadata(self.path)
        except LiteRTError:  # a file not exported by ghostfacenets
            self.metadata = {}

    def _run(self, x: np.ndarray) -> np.ndarray:
        """float32 NHWC (N, H, W, 3) normalised -> float32 (N, D), in the file's batch size (last piece padded)."""
        dtype = self._input["dtype"]
        scale, zero_point = self._input["quantization"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero_point, info.min, info.max)
        x = x.astype(dtype, copy=False)
        parts = []
        for start in range(0, len(x), self.batch):
            piece = x[start : start + self.batch]
            rows = len(piece)
            if rows < self.batch:
                piece = np.concatenate([piece, np.zeros((self.batch - rows, *piece.shape[1:]), piece.dtype)])
            self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(piece))
            self._interpreter.invoke()
            parts.append(self._interpreter.get_tensor(self._output["index"])[:rows].copy())
        out = np.concatenate(parts)
        scale, zero_point = self._output["quantization"]
        if np.issubdtype(out.dtype, np.integer):
            return ((out.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return out.astype(np.float32, copy=False)

    def embed_batch(self, images: np.ndarray, flip: bool) -> np.ndarray:
        x = np.ascontiguousarray(to_array(images).transpose(0, 2, 3, 1))
        out = self._run(x)
        if flip:
            out = out + self._run(np.ascontiguousarray(x[:, :, ::-1]))
        return out
