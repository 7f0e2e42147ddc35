"""ONNX export (dynamic batch, simplified, with the package's metadata), float16 conversion and int8 static
quantisation with onnxruntime, and the measurements that say what int8 costs.

Contract of every exported file (``ghostfacenets.evaluate.embed.OnnxEmbedder`` relies on it): one input ``input``,
float32 (N, 3, 112, 112), RGB normalised as (pixel - 127.5) / 128, N dynamic; one output ``embedding``, float32
(N, D), not L2-normalised. The float16 and int8 files keep float32 input and output. ``metadata_props`` holds
``ghostfacenets`` (all metadata as JSON) and, for tools that read single keys, ``architecture``, ``preprocessing``
(JSON), ``source`` (JSON), ``license`` and ``precision``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..data.transforms import INPUT_SIZE, PIXEL_MEAN, PIXEL_STD
from ..errors import GhostFaceNetsError, ModelFileError
from ..models.fuse import fuse_model
from ..models.ghostfacenet import GhostFaceNet

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
METADATA_KEY = "ghostfacenets"
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
PAD_VALUE = 127  # grey border for crops that are not square, normalised to about 0


class OnnxError(GhostFaceNetsError):
    """An ONNX file that cannot be written, read or quantised."""


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
        "input": {"name": INPUT_NAME, "shape": ["N", 3, model.config.input_size, model.config.input_size],
                  "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", model.config.embedding_size], "dtype": "float32"},
        "precision": precision,
        "exported_by": f"ghostfacenets {__version__} (torch {torch.__version__})",
        **extra,
    }
    return meta


def _set_metadata(proto: Any, meta: dict[str, Any]) -> None:
    from .. import __version__

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
    proto.doc_string = (f"GhostFaceNet {meta.get('architecture', '')} face embedding; input {INPUT_NAME} float32 "
                        f"(N, 3, H, W) RGB (pixel - 127.5) / 128; output {OUTPUT_NAME} (N, D), not normalised")


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
            onnx_ready(model), (torch.zeros(1, 3, size, size),), buffer, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            opset_version=OPSET, dynamo=False,
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
    session = _session(path)
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise OnnxError(f"{path}: ONNX file without ghostfacenets metadata (not exported by ghostfacenets)")
    return json.loads(raw)


def _session(path: str | Path, threads: int | None = None) -> Any:
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


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> float32 (N, 3, H, W), (pixel - 127.5) / 128, as the ONNX input expects."""
    return np.ascontiguousarray(((images.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(0, 3, 1, 2))


def letterbox(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """An RGB image as a ``size`` x ``size`` crop: unchanged when it has that size, else resized to fit (aspect kept)
    and padded with grey; for calibration sets of already aligned crops such as ORL's 92x112 faces."""
    import cv2

    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return cv2.copyMakeBorder(image, top, size - new_h - top, left, size - new_w - left, cv2.BORDER_CONSTANT,
                              value=(PAD_VALUE,) * 3)


def load_face_crops(source: str | Path, limit: int | None = None, size: int = INPUT_SIZE) -> np.ndarray:
    """Aligned face crops uint8 RGB (N, size, size, 3) from a verification ``.bin`` or a folder of images (searched
    recursively, sorted); with ``limit``, that many spread evenly over the set."""
    from ..data.folders import IMAGE_SUFFIXES
    from ..data.images import load_image
    from ..data.verification_bin import load_verification_bin

    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".bin":
        images = load_verification_bin(source)[0]
        chosen = _spread(len(images), limit)
        return np.stack([letterbox(images[i], size) for i in chosen])
    if not source.is_dir():
        raise GhostFaceNetsError(f"{source}: give a folder of aligned face crops or a verification .bin")
    paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not paths:
        raise GhostFaceNetsError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack([letterbox(load_image(paths[i]), size) for i in _spread(len(paths), limit)])


def _spread(n: int, limit: int | None) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise GhostFaceNetsError(f"the number of images must be positive, got {limit}")
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


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
    channel) of an exported float32 ONNX file, calibrated on uint8 RGB face crops (N, H, W, 3).

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
        raise GhostFaceNetsError(f"calibration images must be uint8 (N, H, W, 3) with N > 0, got {calibration.dtype} "
                                 f"{calibration.shape}")
    source = Path(source)
    meta = read_onnx_metadata(source)
    _require_onnx()
    # onnxruntime's histogram calibrators stack the batches, so they must all have the same size: the last one is
    # filled up with the first images again.
    batch_size = min(batch_size, len(calibration))
    count = -(-len(calibration) // batch_size) * batch_size
    ordered = calibration[np.arange(count) % len(calibration)]
    batches = [normalise(ordered[i:i + batch_size]) for i in range(0, count, batch_size)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    # Node names follow the torch module paths: /stem/..., /blocks/blocks.3/...
    float_prefixes = tuple(["/stem/"] + [f"/blocks/blocks.{i}/" for i in range(keep_float_blocks)]) \
        if keep_float_blocks else ()
    with tempfile.TemporaryDirectory(prefix="ghostfacenets-quant-") as tmp:
        prepared, quantised = Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        quant_pre_process(str(source), str(prepared))
        excluded = [n.name for n in _load_proto(prepared).graph.node if float_prefixes and
                    n.name.startswith(float_prefixes)]
        with contextlib.redirect_stdout(sys.stderr):  # the calibrators print progress, which must not mix with JSON
            quantize_static(
                str(prepared), str(quantised), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate,
                nodes_to_exclude=excluded, calibration_providers=["CPUExecutionProvider"],
            )
        proto = _load_proto(quantised)
    meta["onnx"] = {**meta.get("onnx", {}), "precision": "int8", "converted_from": source.name,
                    "quantization": {"tool": "onnxruntime quantize_static", "format": "QDQ", "activations": "uint8",
                                     "weights": "int8 per channel" if per_channel else "int8 per tensor",
                                     "calibration_method": method, "calibration_images": len(calibration),
                                     "float32_blocks": keep_float_blocks}}
    _set_metadata(proto, meta)
    return _save(proto, Path(path))


def run_onnx(path: str | Path, images: np.ndarray, batch_size: int = 64, threads: int | None = None) -> np.ndarray:
    """Raw embeddings float32 (N, D) of uint8 RGB crops (N, H, W, 3) through an ONNX file on the CPU."""
    session = _session(path, threads)
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: normalise(images[i:i + batch_size])})[0]
             for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Agreement:
    """Cosine similarity between the embeddings of a reference and a candidate model over the same faces."""

    faces: int
    mean: float
    min: float
    p01: float  # 1st percentile

    def to_dict(self) -> dict[str, float | int]:
        return {"faces": self.faces, "cosine_mean": self.mean, "cosine_min": self.min, "cosine_p01": self.p01}


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Per-face cosine similarity of two embedding sets (N, D) -> summary."""
    if reference.shape != candidate.shape or reference.ndim != 2 or len(reference) == 0:
        raise ValueError(f"embeddings must be two equal (N, D) arrays, got {reference.shape} and {candidate.shape}")
    a = reference.astype(np.float64)
    b = candidate.astype(np.float64)
    denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.sum(a * b, axis=1) / np.where(denominator > 0, denominator, 1.0)
    return Agreement(len(cosine), float(cosine.mean()), float(cosine.min()), float(np.percentile(cosine, 1)))


def batch1_latency_ms(paths: list[str | Path], repeats: int = 30, threads: int | None = None,
                      block: int = 5) -> list[float]:
    """Median batch-1 CPU latency in ms of each ONNX file; the files take turns in blocks of ``block`` runs, each
    after one untimed run, so that they share the machine's load (a quick check; bench/latency.py measures
    properly)."""
    sessions = [_session(p, threads) for p in paths]
    feeds = []
    for session in sessions:
        shape = session.get_inputs()[0].shape
        size = shape[-1] if isinstance(shape[-1], int) else INPUT_SIZE
        feeds.append({INPUT_NAME: np.zeros((1, 3, size, size), np.float32)})
    times: list[list[float]] = [[] for _ in sessions]
    while len(times[-1]) < repeats:
        for session, feed, record in zip(sessions, feeds, times):
            session.run([OUTPUT_NAME], feed)  # the other session's threads may still be spinning
            for _ in range(min(block, repeats - len(record))):
                start = time.perf_counter()
                session.run([OUTPUT_NAME], feed)
                record.append(time.perf_counter() - start)
    return [float(np.median(t) * 1000) for t in times]


def compare_onnx(
    reference: str | Path,
    candidate: str | Path,
    faces: np.ndarray,
    bins: list[str | Path] = (),
    flip: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """What a converted file (int8, float16) changes against its float32 reference: cosine agreement of the raw
    embeddings over ``faces`` (uint8 RGB crops), verification metrics on each ``.bin`` and the accuracy change in
    points, and the batch-1 latency of both."""
    from ..evaluate.verification import evaluate_bin

    result: dict[str, Any] = {
        "reference": str(reference),
        "candidate": str(candidate),
        "agreement": agreement(run_onnx(reference, faces), run_onnx(candidate, faces)).to_dict(),
        "verification": [],
    }
    for bin_path in bins:
        before = evaluate_bin(str(reference), bin_path, flip=flip, progress=progress)
        after = evaluate_bin(str(candidate), bin_path, flip=flip, progress=progress)
        result["verification"].append({
            "set": Path(bin_path).stem,
            "pairs": before["pairs"],
            "reference": {k: before[k] for k in ("best_threshold_accuracy", "accuracy_10fold_mean")},
            "candidate": {k: after[k] for k in ("best_threshold_accuracy", "accuracy_10fold_mean")},
            "change_points": {k: None if after[k] is None or before[k] is None else 100.0 * (after[k] - before[k])
                              for k in ("best_threshold_accuracy", "accuracy_10fold_mean")},
        })
    reference_ms, candidate_ms = batch1_latency_ms([reference, candidate])
    result["batch1_latency_ms"] = {"reference": reference_ms, "candidate": candidate_ms,
                                   "speedup": reference_ms / candidate_ms}
    return result
