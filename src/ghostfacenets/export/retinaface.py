"""RetinaFace-MobileNet0.25 for other runtimes: the ExecuTorch programs the package's detector runs (cached on disk
like the GhostFaceNet's), the detector of the device pipeline files and the browser module's LiteRT detector.

Every program here has fixed inputs of multiples of 32 pixels (one square side, or for the browser one shape per
signature): NHWC float32 **RGB minus** :data:`RGB_MEAN` (the training mean, RGB order) with the photo at the top
left and zeros elsewhere, and the photo's area; the network's activations beyond that area (rounded up to multiples
of 32) are zeroed before every 3x3 convolution (:func:`~ghostfacenets.models.retinaface.area_masks`), so that for any
photo that fits, the program computes exactly what the network computes on the photo alone padded to multiples of
32, as onnxruntime runs it. The network's BGR order is folded into its first convolution.
"""

from __future__ import annotations

import copy
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import GhostFaceNetsError
from ..models.retinaface import BGR_MEAN, VARIANCES, RetinaFace, anchor_grid, area_masks, load_retinaface
from .mobile import cached_conversion, import_quietly, quiet_lowering

RGB_MEAN = BGR_MEAN[::-1]  # (123, 117, 104)
STRIDE = 32  # input sides are multiples of this


def padded(side: int) -> int:
    """``side`` rounded up to a multiple of 32."""
    return -(-side // STRIDE) * STRIDE


class MaskedRetinaFace(nn.Module):
    """RetinaFace for inputs larger than the photo: (``image`` NHWC float32 (1, H, W, 3), H and W multiples of 32,
    RGB minus :data:`RGB_MEAN` with the photo at the top left; ``area`` float32 (1, 2) the height and width of its
    area, multiples of 32) -> ``loc`` (1, A, 4), ``conf`` (1, A, 2), ``landmarks`` (1, A, 10) for the anchors of the
    whole input, those inside the area equal to what :class:`~ghostfacenets.models.retinaface.RetinaFace` gives
    for the area alone. Exported, each input size is its own program (or signature)."""

    def __init__(self, model: RetinaFace | None = None) -> None:
        super().__init__()
        self.net = copy.deepcopy(model) if model is not None else load_retinaface()
        first = self.net.fx.blocks[0][0][0]
        assert isinstance(first, nn.Conv2d)
        with torch.no_grad():  # input channels RGB instead of BGR
            first.weight.copy_(first.weight.flip(1))
        self.net.eval()

    def forward(self, image: torch.Tensor, area: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masks = area_masks(area[0, 0], area[0, 1], (image.shape[1], image.shape[2]))
        return self.net(image.permute(0, 3, 1, 2), masks)


class SquareRetinaFace(MaskedRetinaFace):
    """:class:`MaskedRetinaFace` for a square input of ``side`` pixels."""

    def __init__(self, side: int, model: RetinaFace | None = None) -> None:
        if side % STRIDE or side < STRIDE:
            raise GhostFaceNetsError(f"the detector side must be a positive multiple of {STRIDE}, got {side}")
        super().__init__(model)
        self.side = side


def area_anchors(side: int, height: int, width: int) -> np.ndarray:
    """Indices, among the anchors of a ``side`` square input, of those of a ``height`` x ``width`` input (multiples
    of 32), in that input's anchor order."""
    indices, offset = [], 0
    for stride in (8, 16, 32):
        cells = side // stride
        rows, columns = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        cell = (rows * cells + columns).reshape(-1)
        indices.append(offset + np.stack([2 * cell, 2 * cell + 1], axis=1).reshape(-1))
        offset += 2 * cells * cells
    return np.concatenate(indices)


class DecodedRetinaFace(nn.Module):
    """RetinaFace for one fixed square input ``size`` with the anchor decoding inside: (``image`` NHWC float32
    (1, size, size, 3) RGB minus :data:`RGB_MEAN` with the photo at the top left, ``photo_size`` float32 (1, 2) the
    photo's height and width there) -> ``scores`` (1, A) face probability, ``boxes`` (1, A, 4) x1, y1, x2, y2 and
    ``landmarks`` (1, A, 10) x, y of the five points, in input pixels. The network computes exactly what it computes
    on the photo alone padded to multiples of 32 (:func:`~ghostfacenets.models.retinaface.area_masks`); anchors
    beyond that area score 0. Thresholding and non-maximum suppression are left to the caller."""

    detector: nn.Module  # a SquareRetinaFace, or its int8 version
    centres: torch.Tensor
    sides: torch.Tensor

    def __init__(self, size: int, model: RetinaFace | None = None) -> None:
        super().__init__()
        if size % STRIDE:
            raise GhostFaceNetsError(f"the detector size must be a multiple of {STRIDE}, got {size}")
        self.size = size
        self.detector = SquareRetinaFace(size, model)
        anchors = torch.from_numpy(anchor_grid(size, size))
        self.register_buffer("centres", anchors[None, :, :2].clone(), persistent=False)
        self.register_buffer("sides", anchors[None, :, 2:].clone(), persistent=False)

    def forward(self, x: torch.Tensor, photo_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        area = torch.ceil(photo_size / STRIDE) * STRIDE  # (height, width) padded as the package pads
        loc, conf, points = self.detector(x, area)
        inside = (self.centres[..., 0] < area[0, 1]) & (self.centres[..., 1] < area[0, 0])
        centre_var, size_var = VARIANCES
        centres = self.centres + loc[..., :2] * (centre_var * self.sides)
        half = self.sides * torch.exp(loc[..., 2:] * size_var) / 2
        boxes = torch.cat([centres - half, centres + half], dim=-1)
        n = points.shape[1]
        offsets = points.reshape(1, n, 5, 2) * (centre_var * self.sides[:, :, None, :])
        landmarks = (self.centres[:, :, None, :] + offsets).reshape(1, n, 10)
        return conf[..., 1] * inside.to(conf.dtype), boxes, landmarks


def detector_input(photo: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 RGB photo as :class:`SquareRetinaFace` takes it (shrunk to ``side`` if larger, area averaging):
    (image (1, side, side, 3), area (1, 2))."""
    import cv2

    height, width = photo.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    h, w = photo.shape[:2]
    image = np.zeros((1, side, side, 3), np.float32)
    image[0, :h, :w] = photo.astype(np.float32) - np.array(RGB_MEAN, np.float32)
    return image, np.array([[padded(h), padded(w)]], np.float32)


@quiet_lowering()
def executorch_detector_bytes(side: int) -> bytes:
    """The float32 ExecuTorch program (XNNPACK) of :class:`SquareRetinaFace` for ``side``."""
    from .executorch import _partitioner, import_exporter

    import_exporter()
    from executorch.exir import to_edge_transform_and_lower

    sample = (torch.zeros(1, side, side, 3), torch.tensor([[side, side]], dtype=torch.float32))
    program = torch.export.export(SquareRetinaFace(side), sample)
    edge = to_edge_transform_and_lower(program, partitioner=[_partitioner()])
    return bytes(edge.to_executorch().buffer)


@quiet_lowering()
def quantized_detector(module: SquareRetinaFace, calibration: list[tuple[np.ndarray, np.ndarray]]) -> nn.Module:
    """``module`` quantised to int8 for XNNPACK (the package's XNNPACK quantizer: int8 per-channel weights, int8
    activations), calibrated on ``calibration``: (image, area) inputs as the module takes them."""
    from .executorch import _quantizer, import_exporter

    import_exporter()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise GhostFaceNetsError("int8 detection needs calibration photos")
    side = module.side
    sample = (torch.zeros(1, side, side, 3), torch.tensor([[side, side]], dtype=torch.float32))
    graph = torch.export.export(module, sample).module()
    prepared = prepare_pt2e(graph, _quantizer())
    with torch.no_grad():
        for image, area in calibration:
            prepared(torch.from_numpy(image), torch.from_numpy(area))
    return convert_pt2e(prepared)


def cached_detector_program(side: int) -> Path:
    """The float32 detector program for ``side`` (:class:`SquareRetinaFace`), lowered once and kept in the package
    cache (keyed by the side and the ExecuTorch version)."""
    key = ["retinaface-mnet0.25-square", side, version("executorch")]
    return cached_conversion("executorch", "retinaface.pte", key, lambda: executorch_detector_bytes(side))


def signature_name(height: int, width: int) -> str:
    """The LiteRT detector's signature for an input of ``height`` x ``width``."""
    return f"{height}x{width}"


@quiet_lowering()
def litert_detector_bytes(shapes: tuple[tuple[int, int], ...]) -> bytes:
    """The float32 ``.tflite`` of :class:`MaskedRetinaFace` with one signature per input shape (the weights stored
    once): inputs ``image`` and ``area``, outputs ``loc``, ``conf``, ``landmarks`` as the module gives them."""
    litert_torch = import_quietly("litert_torch")
    module = MaskedRetinaFace().eval()
    converter: Any = litert_torch
    for height, width in shapes:
        if min(height, width) < STRIDE or height % STRIDE or width % STRIDE:
            raise GhostFaceNetsError(f"detector inputs must be multiples of {STRIDE} pixels, got {height}x{width}")
        sample = (torch.zeros(1, height, width, 3), torch.tensor([[height, width]], dtype=torch.float32))
        converter = converter.signature(signature_name(height, width), module, sample)
    return bytes(converter.convert().model_content())


def cached_litert_detector(shapes: tuple[tuple[int, int], ...]) -> Path:
    """:func:`litert_detector_bytes`, converted once and kept in the package cache (keyed by the shapes and the
    litert-torch version)."""
    key = ["retinaface-mnet0.25-masked", shapes, version("litert-torch")]
    return cached_conversion("litert", "retinaface.tflite", key, lambda: litert_detector_bytes(shapes))
