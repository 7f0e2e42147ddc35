"""Fast inference of a GhostFaceNet: fused channels-last PyTorch, ExecuTorch (XNNPACK) and onnxruntime on the CPU,
torch.compile and CUDA graphs.

``FastEmbedder(model, backend=...)`` wraps a model for one of five ways of running it:

* ``"fused"``: BatchNorm folded (:func:`ghostfacenets.models.fuse.fuse_model`), channels-last, inference mode, any
  batch size; the default on every device.
* ``"executorch"``: the fused model lowered to an ExecuTorch program with the XNNPACK delegate (the mobile extra) and
  run by ExecuTorch's runtime on the CPU, the fastest CPU path (docs/benchmarks.md); programs are cached on disk
  (:func:`ghostfacenets.export.executorch.cached_program`), so only the first use of given weights pays the lowering.
* ``"onnxruntime"``: the fused model exported in memory and run by onnxruntime on the CPU (see docs/deployment.md).
* ``"compile"``: ``torch.compile`` of the fused model, run at fixed batch sizes (``buckets``) so that it compiles once
  per bucket and never again.
* ``"cuda-graph"``: the fused model captured in one CUDA graph per bucket and replayed, which removes the per-kernel
  launch cost that dominates at batch 1 on a GPU.

With buckets, a batch of N rows runs as full chunks of the largest bucket plus the smallest bucket that holds the
rest, padded with zeros; padding rows never reach the output. ``FastEmbedder`` also satisfies the embedder protocol of
:mod:`ghostfacenets.inference.embedders`, so ``embed_images(FastEmbedder(model), crops)`` works.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..data.transforms import to_array, to_tensor
from ..errors import GhostFaceNetsError
from ..models.fuse import fuse_model
from ..models.ghostfacenet import GhostFaceNet

BACKENDS = ("fused", "executorch", "onnxruntime", "compile", "cuda-graph")
# Backends that run on the CPU in another runtime, from float32 NCHW arrays.
CPU_RUNTIMES = ("executorch", "onnxruntime")
DEFAULT_BUCKETS = (1, 8, 32, 128)
# onnxruntime runs large batches in pieces of this many rows: on two CPU cores V1-1.3-1 ran 1.2x faster in pieces of
# 16 than in one batch of 256, V1-1.3-2 about the same.
ONNX_CHUNK = 16
# ExecuTorch runs batch-1 programs, image by image: a program planned for batches of up to 8 ran batch 1 two to three
# times slower for V1-1.3-1 and V2-1.3-2 in the same run (docs/benchmarks.md), and XNNPACK at batch 1 already beat
# onnxruntime's batches in images per second.
EXECUTORCH_CHUNK = 1


def bucket_plan(n: int, buckets: Sequence[int]) -> list[tuple[int, int]]:
    """How to run ``n`` rows at fixed batch sizes: ``(rows, bucket)`` pieces, full pieces of the largest bucket first,
    then the smallest bucket that holds what is left."""
    sizes = sorted(set(buckets))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"buckets must be positive batch sizes, got {list(buckets)}")
    if n < 0:
        raise ValueError(f"the number of rows must not be negative, got {n}")
    largest = sizes[-1]
    plan = [(largest, largest)] * (n // largest)
    rest = n % largest
    if rest:
        plan.append((rest, next(s for s in sizes if s >= rest)))
    return plan


def optimize_for_inference(
    model: GhostFaceNet,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
) -> GhostFaceNet:
    """A fused copy of ``model`` on ``device`` in ``dtype``, channels-last by default (2x faster on CPUs with
    oneDNN and what GPU tensor cores want)."""
    fused = fuse_model(model).to(device=device, dtype=dtype)
    if not channels_last:
        return fused
    return fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub omits it


class _StaticBatches:
    """Runs a function of fixed-shape batches with one persistent input buffer per bucket; with ``cuda_graphs`` each
    bucket is captured once as a CUDA graph (with its output buffer) and replayed."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        buckets: Sequence[int],
        sample: torch.Tensor,
        memory_format: torch.memory_format,
        cuda_graphs: bool,
    ) -> None:
        bucket_plan(0, buckets)  # validates the buckets
        self.fn = fn
        self.buckets = tuple(sorted(set(buckets)))
        self.sample = sample  # one input row: shape, dtype and device of the buffers
        self.memory_format = memory_format
        self.cuda_graphs = cuda_graphs
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.graphs: dict[int, Any] = {}

    def _prepare(self, bucket: int) -> None:
        static = self.sample.new_zeros((bucket, *self.sample.shape[1:])).contiguous(memory_format=self.memory_format)
        self.inputs[bucket] = static
        if not self.cuda_graphs:
            self.fn(static)  # torch.compile compiles this bucket's shape now
            return
        stream = torch.cuda.Stream(device=static.device)
        stream.wait_stream(torch.cuda.current_stream(static.device))
        with torch.cuda.stream(stream):  # warm up outside the graph (cuDNN algorithm choice, allocations)
            for _ in range(3):
                self.fn(static)
        torch.cuda.current_stream(static.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outputs[bucket] = self.fn(static)
        self.graphs[bucket] = graph

    def warm_up(self) -> None:
        """Compile or capture every bucket now rather than at first use."""
        for bucket in self.buckets:
            if bucket not in self.inputs:
                self._prepare(bucket)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        parts, start = [], 0
        for rows, bucket in bucket_plan(x.shape[0], self.buckets):
            if bucket not in self.inputs:
                self._prepare(bucket)
            static = self.inputs[bucket]
            static[:rows].copy_(x[start : start + rows])
            if rows < bucket:
                static[rows:].zero_()
            if self.cuda_graphs:
                self.graphs[bucket].replay()
                out = self.outputs[bucket]
            else:
                out = self.fn(static)
            parts.append(out[:rows].clone())
            start += rows
        return torch.cat(parts) if len(parts) > 1 else parts[0]


class FastEmbedder:
    """A GhostFaceNet prepared for fast inference: ``embedder(x)`` maps normalised float (N, 3, H, W) to raw
    embeddings (N, D); ``embed_batch`` takes uint8 RGB crops. See the module docstring for the backends.

    ``dtype``: torch.float16 or torch.bfloat16 for GPUs (outputs are returned as float32). ``buckets``: the fixed batch
    sizes of "compile" and "cuda-graph" (default 1, 8, 32, 128); also usable with "fused". ``compile_options``: passed
    to ``torch.compile``. ``threads``: onnxruntime's intra-op threads (default: all cores).
    """

    def __init__(
        self,
        model: GhostFaceNet,
        backend: str = "fused",
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
        buckets: Sequence[int] | None = None,
        compile_options: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise GhostFaceNetsError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if not isinstance(model, GhostFaceNet):
            raise GhostFaceNetsError(f"FastEmbedder needs a GhostFaceNet, got {type(model).__name__}")
        self.backend = backend
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if backend == "cuda-graph" and self.device.type != "cuda":
            raise GhostFaceNetsError("the cuda-graph backend needs a CUDA device (device='cuda')")
        if backend in CPU_RUNTIMES and (self.device.type != "cpu" or dtype != torch.float32):
            raise GhostFaceNetsError(
                f"the {backend} backend runs float32 on the CPU; export a file (ghostfacenets export) for other "
                "precisions and devices"
            )
        self.dtype = dtype
        size = model.config.input_size
        self.input_size = (size, size)
        self.embedding_size = model.config.embedding_size
        self.name = f"{model.metadata.get('architecture', type(model).__name__)} ({backend})"
        self._runner: Callable[[torch.Tensor], torch.Tensor]
        if backend == "onnxruntime":
            self._runner = self._onnxruntime_runner(model, threads)
            return
        if backend == "executorch":
            self._runner = self._executorch_runner(model)
            return
        self.model = optimize_for_inference(model, self.device, dtype, channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        fn: Callable[[torch.Tensor], torch.Tensor] = self.model
        if backend == "compile":
            fn = torch.compile(self.model, dynamic=False, **(compile_options or {}))
        if backend in ("compile", "cuda-graph") and buckets is None:
            buckets = DEFAULT_BUCKETS
        if buckets is not None:
            sample = torch.zeros(1, 3, size, size, device=self.device, dtype=dtype).contiguous(
                memory_format=self.memory_format
            )
            fn = _StaticBatches(fn, buckets, sample, self.memory_format, cuda_graphs=backend == "cuda-graph")
        self._runner = fn

    @staticmethod
    def _onnxruntime_runner(model: GhostFaceNet, threads: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
        import onnxruntime as ort

        from ..export.onnx import INPUT_NAME, OUTPUT_NAME, onnx_bytes

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(onnx_bytes(model), options, providers=["CPUExecutionProvider"])

        def run(x: torch.Tensor) -> torch.Tensor:
            feed = np.ascontiguousarray(x.detach().cpu().float().numpy())
            return torch.from_numpy(
                np.concatenate(
                    [
                        session.run([OUTPUT_NAME], {INPUT_NAME: feed[i : i + ONNX_CHUNK]})[0]
                        for i in range(0, len(feed), ONNX_CHUNK)
                    ]
                )
            )

        return run

    def _executorch_runner(self, model: GhostFaceNet) -> Callable[[torch.Tensor], torch.Tensor]:
        from ..export.executorch import cached_program, load_method, load_program

        path = cached_program(model, EXECUTORCH_CHUNK)
        self._program = load_program(path)  # its methods need it alive
        forward = load_method(self._program, "forward", str(path))

        def run(x: torch.Tensor) -> torch.Tensor:
            feed = x.detach().cpu().float().contiguous()
            parts = [
                forward.execute((feed[i : i + EXECUTORCH_CHUNK],))[0] for i in range(0, len(feed), EXECUTORCH_CHUNK)
            ]
            return torch.cat(parts) if len(parts) > 1 else parts[0]

        return run

    def warm_up(self) -> FastEmbedder:
        """Compile or capture every bucket now (the first call otherwise does it); returns self."""
        if isinstance(self._runner, _StaticBatches):
            with torch.inference_mode():
                self._runner.warm_up()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float (N, 3, H, W) -> float32 embeddings (N, D), on this embedder's device."""
        if x.shape[0] == 0:
            return torch.zeros(
                0, self.embedding_size, device=self.device if self.backend not in CPU_RUNTIMES else "cpu"
            )
        with torch.inference_mode():
            if self.backend not in CPU_RUNTIMES:
                x = x.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=self.memory_format)
            return self._runner(x).float()

    def embed_batch(self, images: np.ndarray, flip: bool) -> np.ndarray:
        """uint8 RGB crops (N, H, W, 3) -> float32 (N, D); with ``flip``, emb(x) + emb(flip_lr(x)) in one batch."""
        n = len(images)
        if self.backend in CPU_RUNTIMES:  # preprocessing in numpy: no torch thread pool spinning beside the runtime's
            array = to_array(images)
            if flip:
                array = np.ascontiguousarray(np.concatenate([array, array[..., ::-1]]))
            out = self(torch.from_numpy(array)).numpy()
        else:
            pixels = torch.from_numpy(np.ascontiguousarray(images))
            if self.device.type == "cuda":
                pixels = pixels.pin_memory().to(self.device, non_blocking=True)
            x = to_tensor(pixels)
            out = self(torch.cat([x, torch.flip(x, dims=[3])]) if flip else x).cpu().numpy()
        return out[:n] + out[n:] if flip else out
