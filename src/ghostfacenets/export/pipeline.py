"""The whole face pipeline as device files: a detector file and an align-and-embed file per runtime (ExecuTorch
``.pte``, LiteRT ``.tflite``, ONNX ``.onnx``), so that an app only decodes the photo, copies pixels, keeps the
detector's faces above the score threshold with non-maximum suppression, and compares embeddings.

The contract (docs/mobile.md#the-pipeline-files, :data:`CONTRACT_VERSION`), the same for every runtime:

* **detector**: input ``image`` float32 (1, S, S, 3) NHWC, the photo shrunk (area averaging) so that its longer side
  is at most S, at the top left, RGB minus (123, 117, 104), zeros elsewhere; outputs ``scores`` (1, A) face
  probability, ``boxes`` (1, A, 4) x1, y1, x2, y2 and ``landmarks`` (1, A, 10) x, y of left eye, right eye, nose,
  left and right mouth corner (as seen in the image), in ``image`` pixels, for the A anchors of RetinaFace at S.
* **align-and-embed**: inputs ``image`` uint8 (1, C, C, 3) NHWC RGB, a window of the photo, and ``landmarks``
  float32 (1, 5, 2) in window pixels; output ``embedding`` float32 (1, D), L2-normalised (with the mirrored crop's
  embedding added first when the metadata says ``flip``). The window is the C x C square of the photo centred on
  the face box's centre (zeros beyond the photo); a face whose box is larger than C / 2 is first shrunk with its
  photo (area averaging) to that size. Inside: the least-squares similarity transform onto the ArcFace template,
  the bilinear warp to 112 x 112 (:class:`~ghostfacenets.models.align.SimilarityAlign`), normalisation, the
  GhostFaceNet.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.transforms import INPUT_SIZE, PIXEL_MEAN, PIXEL_STD
from ..errors import GhostFaceNetsError
from ..files import atomic_path, atomic_write
from ..models.align import SimilarityAlign
from ..models.fuse import fuse_model
from ..models.ghostfacenet import GhostFaceNet
from ..models.retinaface import info as retinaface_info
from .mobile import quiet_lowering
from .retinaface import RGB_MEAN, STRIDE, DecodedRetinaFace, SquareRetinaFace, detector_input, quantized_detector

CONTRACT_VERSION = 1
DETECTOR_SIZE = 640
ALIGN_SIZE = 2048
FACE_MARGIN = 2.0  # the window is this many times the face box's longer side
SCORE_THRESHOLD = 0.9
NMS_IOU = 0.4
RUNTIMES = {"executorch": ".pte", "litert": ".tflite", "onnx": ".onnx"}
DETECTOR_OUTPUTS = ("scores", "boxes", "landmarks")


class PipelineError(GhostFaceNetsError):
    """Pipeline files that cannot be written."""


class AlignEmbed(nn.Module):
    """(``image`` uint8 (1, C, C, 3), ``landmarks`` float32 (1, 5, 2)) -> L2-normalised ``embedding`` (1, D):
    :class:`SimilarityAlign`, ``(pixel - 127.5) / 128``, ``embedder`` (normalised NCHW -> (N, D)), the sum over the
    crop and its mirror with ``flip``."""

    def __init__(self, embedder: nn.Module, flip: bool = True) -> None:
        super().__init__()
        self.align = SimilarityAlign(INPUT_SIZE, mirrored=flip)
        self.embedder = embedder

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        crops = self.align(image, landmarks)
        x = ((crops - PIXEL_MEAN) / PIXEL_STD).permute(0, 3, 1, 2)
        out = self.embedder(x).sum(0, keepdim=True)
        return out / torch.sqrt((out * out).sum(1, keepdim=True) + 1e-12)


@dataclass(frozen=True)
class PipelineFiles:
    """The two files written for one runtime and precision."""

    runtime: str
    precision: str
    detector: Path
    align_embed: Path


def contract(model: GhostFaceNet, detector_size: int, align_size: int, flip: bool) -> dict[str, Any]:
    """The pipeline facts every file carries in its metadata (``pipeline``), whatever its runtime."""
    anchors = sum(2 * (-(-detector_size // s)) ** 2 for s in retinaface_info()["strides"])
    return {
        "contract_version": CONTRACT_VERSION,
        "detector": {
            "network": retinaface_info(),
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, detector_size, detector_size, 3],
                    "dtype": "float32",
                    "layout": "NHWC",
                    "content": "the photo shrunk with area averaging so that its longer side is at most the input "
                    "side (never enlarged), at the top left, RGB minus mean_rgb, zeros elsewhere",
                    "mean_rgb": list(RGB_MEAN),
                },
                {
                    "name": "photo_size",
                    "shape": [1, 2],
                    "dtype": "float32",
                    "content": "height and width of the (shrunk) photo in image, pixels",
                },
            ],
            "outputs": [
                {"name": "scores", "shape": [1, anchors], "content": "face probability"},
                {"name": "boxes", "shape": [1, anchors, 4], "content": "x1, y1, x2, y2 in input pixels"},
                {
                    "name": "landmarks",
                    "shape": [1, anchors, 10],
                    "content": "x, y of left eye, right eye, nose, left mouth corner, right mouth corner (as seen in "
                    "the image), input pixels",
                },
            ],
            "decoding": {
                "score_threshold": SCORE_THRESHOLD,
                "nms_iou": NMS_IOU,
                "steps": "keep scores >= score_threshold; divide x by (resized width / photo width) and y by "
                "(resized height / photo height); clip boxes to the photo; greedy non-maximum suppression at "
                "nms_iou, highest score first; the largest box is the face to use when one is needed",
            },
        },
        "align_embed": {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, align_size, align_size, 3],
                    "dtype": "uint8",
                    "layout": "NHWC",
                    "content": "RGB window of the photo (see window)",
                },
                {
                    "name": "landmarks",
                    "shape": [1, 5, 2],
                    "dtype": "float32",
                    "content": "the detector's five points, in window pixels",
                },
            ],
            "output": {
                "name": "embedding",
                "shape": [1, model.config.embedding_size],
                "dtype": "float32",
                "content": "L2-normalised embedding: cosine similarity = dot product",
            },
            "window": {
                "side": align_size,
                "face_margin": FACE_MARGIN,
                "rule": "scale = min(1, side / (face_margin * longer side of the face box)); shrink the photo by scale "
                "(area averaging) when scale < 1; origin = floor(scale * box centre) - side // 2; window = the "
                "side x side pixels of the (shrunk) photo from origin, zeros beyond the photo; landmarks = scale * "
                "landmarks - origin",
            },
            "flip": flip,
            "alignment": "least-squares similarity transform of the five points onto the ArcFace 112x112 template, "
            "bilinear warp, black outside the image, rounded to whole grey levels (as ghostfacenets.data.align)",
        },
    }


def _embedder_module(model: GhostFaceNet, runtime: str) -> nn.Module:
    if runtime == "onnx":
        from .onnx import onnx_ready

        return onnx_ready(model).eval()
    return fuse_model(copy.deepcopy(model).float().cpu(), inplace=True).eval()


def _samples(
    detector_size: int, align_size: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    landmarks = torch.tensor([[[90.0, 100.0], [130.0, 100.0], [110.0, 125.0], [95.0, 145.0], [125.0, 145.0]]])
    image = torch.zeros(1, align_size, align_size, 3, dtype=torch.uint8)
    size = torch.tensor([[detector_size * 0.75, detector_size]])
    return (torch.zeros(1, detector_size, detector_size, 3), size), (image, landmarks)


def _metadata(model: GhostFaceNet, runtime: str, precision: str, role: str, facts: dict[str, Any]) -> dict[str, Any]:
    from .mobile import mobile_metadata

    meta = mobile_metadata(model, runtime, precision, "NHWC", {}, {}, role=role)
    meta[runtime].pop("input")
    meta[runtime].pop("output")
    meta["pipeline"] = {**facts, "role": role, "runtime": runtime, "precision": precision}
    return meta


def _quantized_embedder(model: GhostFaceNet, calibration: np.ndarray) -> nn.Module:
    from .executorch import _quantized_int8

    module = fuse_model(copy.deepcopy(model).float().cpu(), inplace=True).eval()
    return _quantized_int8(module, calibration, model.config.input_size)


def _executorch(module: nn.Module, sample: tuple[torch.Tensor, ...], meta: dict[str, Any], path: Path) -> Path:
    from .executorch import METADATA_METHOD, _partitioner, import_exporter, load_method, load_program
    from .mobile import progress_to_stderr

    import_exporter()
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(module, sample)
    with progress_to_stderr():
        edge = to_edge_transform_and_lower(
            program, partitioner=[_partitioner()], constant_methods={METADATA_METHOD: json.dumps(meta)}
        )
        data = bytes(edge.to_executorch().buffer)
    load_method(load_program(data), "forward", str(path))  # XNNPACK checks the program only now
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


def _litert(module: nn.Module, sample: tuple[torch.Tensor, ...], meta: dict[str, Any], path: Path) -> Path:
    from .litert import _require, with_metadata
    from .mobile import progress_to_stderr

    litert_torch = _require("litert_torch")
    with progress_to_stderr():
        tflite = bytes(litert_torch.convert(module.eval(), sample).model_content())
    meta["litert"]["converter"] = f"litert-torch {litert_torch.__version__}"
    with atomic_write(path, "wb") as f:
        f.write(with_metadata(tflite, meta))
    return path


def _onnx(
    module: nn.Module,
    sample: tuple[torch.Tensor, ...],
    meta: dict[str, Any],
    path: Path,
    inputs: list[str],
    outputs: list[str],
) -> Path:
    from .onnx import OPSET, _require_onnx, _set_metadata

    onnx, _ = _require_onnx()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(
            module.eval(),
            sample,
            buffer,  # type: ignore[arg-type]  # torch's annotation omits the file objects it accepts
            input_names=inputs,
            output_names=outputs,
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    _set_metadata(proto, meta)
    proto.doc_string = f"ghostfacenets pipeline {meta['pipeline']['role']} (contract {CONTRACT_VERSION})"
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


@quiet_lowering()
def export_pipeline(
    model: GhostFaceNet,
    stem: str | Path,
    runtime: str,
    precision: str = "float32",
    detector_size: int = DETECTOR_SIZE,
    align_size: int = ALIGN_SIZE,
    flip: bool = True,
    calibration: np.ndarray | None = None,
    detector_calibration: list[np.ndarray] | None = None,
) -> PipelineFiles:
    """Write ``STEM.detector`` and ``STEM.align_embed`` files (``.int8`` before the suffix for int8) for ``runtime``
    ("executorch", "litert" or "onnx"), with the contract and the model's metadata (thresholds, licence) in each;
    atomic. int8 (ExecuTorch only) quantises the GhostFaceNet with ``calibration`` (uint8 aligned crops) and the
    detector network with ``detector_calibration`` (uint8 RGB photos); the warp and the anchor decoding stay in
    float32."""
    if runtime not in RUNTIMES:
        raise PipelineError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision not in ("float32", "int8"):
        raise PipelineError(f"precision must be float32 or int8, got {precision!r}")
    if precision == "int8" and runtime != "executorch":
        raise PipelineError("int8 pipeline files are written for ExecuTorch only (--executorch)")
    if precision == "int8" and (calibration is None or not detector_calibration):
        raise PipelineError("int8 pipeline files need aligned faces (--calib) and photos (--calib-photos)")
    if detector_size % STRIDE or detector_size < STRIDE:
        raise PipelineError(f"the detector size must be a positive multiple of {STRIDE}, got {detector_size}")
    if align_size < INPUT_SIZE:
        raise PipelineError(f"the align window must be at least {INPUT_SIZE} pixels, got {align_size}")
    facts = contract(model, detector_size, align_size, flip)
    detector = DecodedRetinaFace(detector_size)
    embedder = _embedder_module(model, runtime)
    det_sample, align_sample = _samples(detector_size, align_size)
    if precision == "int8":
        assert calibration is not None and detector_calibration is not None
        inputs = [detector_input(photo, detector_size) for photo in detector_calibration]
        detector.detector = quantized_detector(SquareRetinaFace(detector_size), inputs)
        embedder = _quantized_embedder(model, calibration)
    align = AlignEmbed(embedder, flip).eval()
    suffix = RUNTIMES[runtime]
    tag = ".int8" if precision == "int8" else ""
    stem = Path(stem)
    paths = (
        stem.with_name(f"{stem.name}.detector{tag}{suffix}"),
        stem.with_name(f"{stem.name}.align_embed{tag}{suffix}"),
    )
    det_meta = _metadata(model, runtime, precision, "detector", facts)
    align_meta = _metadata(model, runtime, precision, "align_embed", facts)
    if runtime == "executorch":
        extra = {"delegate": "XNNPACK", "exporter": f"executorch {version('executorch')}"}
        det_meta["executorch"].update(extra)
        align_meta["executorch"].update(extra)
        _executorch(detector, det_sample, det_meta, paths[0])
        _executorch(align, align_sample, align_meta, paths[1])
    elif runtime == "litert":
        _litert(detector, det_sample, det_meta, paths[0])
        _litert(align, align_sample, align_meta, paths[1])
    else:
        _onnx(detector, det_sample, det_meta, paths[0], ["image", "photo_size"], list(DETECTOR_OUTPUTS))
        _onnx(align, align_sample, align_meta, paths[1], ["image", "landmarks"], ["embedding"])
    return PipelineFiles(runtime, precision, *paths)
