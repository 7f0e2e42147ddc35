"""Embedders: what turns aligned face crops into embeddings, and the one rule that picks how a model runs.

Every embedder takes uint8 RGB crops (N, H, W, 3), normalises them as the official code does
(:func:`ghostfacenets.data.transforms.to_tensor`), and returns raw embeddings (N, D) as float32. With ``flip`` the
result is embedding(x) + embedding(flip_lr(x)) (the paper's setting), not normalised.

:func:`load_embedder` is used by evaluation, the face pipeline (``FaceRecognizer``, the service) and training
validation alike. With ``backend="auto"`` it picks:

* an ``.onnx`` file: onnxruntime (its CUDA provider when a GPU is asked for and present); a ``.pte`` file:
  ExecuTorch; a ``.tflite`` file: LiteRT (both on the CPU, the mobile extra);
* a GhostFaceNet (a module, a file or a pretrained name) on the CPU: ``"executorch"`` (the model lowered to ExecuTorch
  with XNNPACK, cached on disk; the fastest CPU path, docs/benchmarks.md) with the mobile extra, else
  ``"onnxruntime"`` (exported in memory) with the onnx extra, else ``"fused"`` PyTorch;
* a GhostFaceNet on a GPU: ``"fused"`` (BatchNorm folded, channels-last);
* any other ``nn.Module``: ``"eager"`` (run as it is).

``backend`` may also name one of :data:`BACKENDS` explicitly. An embedder made from a module is a snapshot of its
weights at that moment (except ``"eager"``, which runs the module itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..data.transforms import to_array, to_tensor
from ..errors import GhostFaceNetsError, ModelFileError
from ..export.executorch import executorch_available
from ..export.onnx import onnx_available, session_metadata
from ..models.ghostfacenet import GhostFaceNet
from .fast import BACKENDS as FAST_BACKENDS
from .fast import CPU_RUNTIMES, FastEmbedder


@runtime_checkable
class Embedder(Protocol):
    """Turns a batch of uint8 RGB crops into float32 embeddings."""

    @property
    def name(self) -> str: ...

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) the model needs, None when any size is accepted."""
        ...

    @property
    def embedding_size(self) -> int | None: ...

    def embed_batch(self, images: np.ndarray, flip: bool) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> float32 (N, D); with ``flip`` the sum over the image and its mirror."""
        ...


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None, check_available: bool = True) -> torch.device:
    """The device ``device`` names (None: :func:`default_device`), or a one-line :class:`GhostFaceNetsError` for a
    name torch does not know or (``check_available``) a CUDA device this torch cannot use."""
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise GhostFaceNetsError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if check_available and resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise GhostFaceNetsError(f"device {device!r}: CUDA is not available ({why}); use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise GhostFaceNetsError(
                f"device {device!r}: no GPU cuda:{resolved.index} ({torch.cuda.device_count()} visible)"
            )
    return resolved


class TorchEmbedder:
    """An ``nn.Module`` mapping normalised (N, 3, H, W) to (N, D), run in eval mode without gradients."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = None, name: str | None = None) -> None:
        if device is not None:
            device = resolve_device(device)
            model = model.to(device)
        self.model = model
        first = next(model.parameters(), None)
        self.device = device if device is not None else (first.device if first is not None else torch.device("cpu"))
        self.dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        self.name = name or type(model).__name__
        config = getattr(model, "config", None)
        size = getattr(config, "input_size", None)
        self.input_size = (size, size) if isinstance(size, int) else None
        embedding_size = getattr(model, "embedding_size", None)
        self.embedding_size = embedding_size if isinstance(embedding_size, int) else None

    def embed_batch(self, images: np.ndarray, flip: bool) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                pixels = torch.from_numpy(np.ascontiguousarray(images))
                if self.device.type == "cuda":
                    pixels = pixels.pin_memory().to(self.device, non_blocking=True)
                x = to_tensor(pixels).to(self.dtype)  # half-precision models get half-precision input
                out = self.model(x)
                if flip:
                    out = out + self.model(torch.flip(x, dims=[3]))
                return out.float().cpu().numpy()
        finally:
            self.model.train(was_training)


class OnnxEmbedder:
    """An ONNX model run with onnxruntime; input name, dtype and any fixed batch size are read from the session."""

    def __init__(self, path: str | Path, device: str | torch.device | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.name = self.path.name
        available = ort.get_available_providers()
        asked = resolve_device(device, check_available=False).type if device is not None else None
        providers = ["CPUExecutionProvider"]
        if asked in (None, "cuda") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif asked == "cuda":
            raise GhostFaceNetsError(
                f"{self.path}: CUDA requested but this onnxruntime has no CUDA provider (install onnxruntime-gpu)"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ModelFileError(f"{self.path}: not a usable ONNX model ({exc})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelFileError(
                f"{self.path}: expected one input shaped (N, 3, H, W), got {[(i.name, i.shape) for i in inputs]}"
            )
        self.input_name = inputs[0].name
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        batch, channels, height, width = inputs[0].shape
        if isinstance(channels, int) and channels != 3:
            raise ModelFileError(f"{self.path}: input has {channels} channels, expected 3 (RGB)")
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.input_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        outputs = self.session.get_outputs()
        output = next((o for o in outputs if o.name == "embedding"), outputs[0])
        self.output_name = output.name
        last = output.shape[-1] if output.shape else None
        self.embedding_size = last if isinstance(last, int) else None
        self.metadata = session_metadata(self.session) or {}

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if self.fixed_batch is None:
            return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0], dtype=np.float32)
        parts = []
        for start in range(0, n, self.fixed_batch):
            chunk = x[start : start + self.fixed_batch]
            pad = self.fixed_batch - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out = self.session.run([self.output_name], {self.input_name: chunk})[0]
            parts.append(np.asarray(out, dtype=np.float32)[: self.fixed_batch - pad])
        return np.concatenate(parts)

    def embed_batch(self, images: np.ndarray, flip: bool) -> np.ndarray:
        x = to_array(images).astype(self.input_dtype, copy=False)
        out = self._run(x)
        if flip:
            out = out + self._run(np.ascontiguousarray(x[..., ::-1]))
        return out.reshape(out.shape[0], -1)


AUTO = "auto"
EAGER = "eager"
BACKENDS = (AUTO, EAGER, *FAST_BACKENDS)
# Model files that run in a runtime of their own, by suffix.
FILE_RUNTIMES = {".onnx": "onnxruntime", ".pte": "executorch", ".tflite": "litert"}


def load_embedder(
    source: Any, device: str | torch.device | None = None, backend: str = AUTO, threads: int | None = None
) -> Embedder:
    """An embedder from an ``.onnx``, ``.pte`` or ``.tflite`` path, an ``nn.Module``, an embedder, or anything
    ``load_model`` accepts, run by ``backend`` (:data:`BACKENDS`; "auto" follows the rule in this module's docstring).

    ``device``: "cpu", "cuda", ...; None picks CUDA when available (an ``nn.Module`` then stays where it is).
    ``threads``: onnxruntime's threads per call (default: all cores); PyTorch's are process-wide
    (``torch.set_num_threads``).
    """
    if backend not in BACKENDS:
        raise GhostFaceNetsError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(source, Embedder):
        return source
    suffix = Path(source).suffix.lower() if isinstance(source, (str, Path)) else ""
    if suffix in FILE_RUNTIMES:
        runtime = FILE_RUNTIMES[suffix]
        if backend not in (AUTO, runtime):
            raise GhostFaceNetsError(f"{source}: a {suffix} file runs with {runtime}, not with backend {backend!r}")
        if not Path(source).is_file():
            raise ModelFileError(f"{source}: no such file")
        if suffix == ".onnx":
            return OnnxEmbedder(source, device, threads)
        if device is not None and resolve_device(device, check_available=False).type != "cpu":
            raise GhostFaceNetsError(f"{source}: {runtime} runs on the CPU, not on {device}")
        from .mobile import ExecuTorchEmbedder, LiteRTEmbedder

        return ExecuTorchEmbedder(source) if suffix == ".pte" else LiteRTEmbedder(source, threads)
    if isinstance(source, (str, Path)):
        from ..model_io import load_model

        resolved = resolve_device(device)  # before loading: a bad device fails before any download
        return _module_embedder(load_model(source), resolved, backend, str(source), threads)
    if isinstance(source, nn.Module):
        return _module_embedder(source, device, backend, None, threads)
    raise ModelFileError(f"cannot make an embedder from a {type(source).__name__}; give a model, a file or a name")


def _module_embedder(
    model: nn.Module, device: str | torch.device | None, backend: str, name: str | None, threads: int | None = None
) -> Embedder:
    """The embedder ``backend`` names for a module; "auto" as the module docstring says."""
    if backend == AUTO:
        if not isinstance(model, GhostFaceNet):
            backend = EAGER
        else:
            where = resolve_device(device) if device is not None else _module_device(model)
            backend = "fused"
            if where.type == "cpu":
                backend = "executorch" if executorch_available() else "onnxruntime" if onnx_available() else "fused"
            device = where
    if backend == EAGER:
        return TorchEmbedder(model, device, name=name)
    if not isinstance(model, GhostFaceNet):
        raise GhostFaceNetsError(f"backend {backend!r} needs a GhostFaceNet, got a {type(model).__name__}")
    if backend in CPU_RUNTIMES and device is not None and resolve_device(device).type != "cpu":
        raise GhostFaceNetsError(f"the {backend} backend runs on the CPU; export a file for other devices")
    embedder = FastEmbedder(
        model,
        backend=backend,
        device=resolve_device(device) if device is not None else None,
        threads=threads if backend == "onnxruntime" else None,
    )
    if name:
        embedder.name = f"{name} ({backend})"
    return embedder


def _module_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def check_images(images: Any, name: str = "images") -> np.ndarray:
    """Validate uint8 RGB crops shaped (N, H, W, 3) and return them as an array."""
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise GhostFaceNetsError(
            f"{name}: expected uint8 RGB crops shaped (N, H, W, 3), got {array.dtype} {array.shape}"
        )
    return array


def embed_images(
    embedder_or_model: Any,
    images: np.ndarray,
    batch_size: int = 128,
    flip: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Embeddings float32 (N, D) of uint8 RGB crops (N, H, W, 3); with ``flip``, emb(x) + emb(flip_lr(x)).

    ``embedder_or_model``: anything :func:`load_embedder` accepts. Not L2-normalised.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    embedder = load_embedder(embedder_or_model, device)
    images = check_images(images)
    if embedder.input_size is not None and tuple(images.shape[1:3]) != tuple(embedder.input_size):
        h, w = embedder.input_size
        raise GhostFaceNetsError(
            f"crops are {images.shape[1]}x{images.shape[2]} (HxW) but {embedder.name} needs {h}x{w}: "
            "align the faces to the ArcFace template first"
        )
    if len(images) == 0:
        return np.zeros((0, embedder.embedding_size or 0), np.float32)
    parts = []
    with tqdm(total=len(images), desc="embedding", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            parts.append(embedder.embed_batch(batch, flip))
            bar.update(len(batch))
    return np.concatenate(parts).astype(np.float32, copy=False)
