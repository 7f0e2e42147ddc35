"""RetinaFace-MobileNet0.25 for other runtimes: the ExecuTorch program the package's detector runs (float32 and
int8, cached on disk like the GhostFaceNet's) and the modules the device pipeline files are made of.

Every program here takes the photo as NHWC float32 **RGB minus** :data:`RGB_MEAN` (the training mean, in RGB order),
padded with zeros (the mean colour); the network's BGR order is folded into its first convolution, so nothing
reorders channels at run time.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import GhostFaceNetsError
from ..files import atomic_write
from ..models.retinaface import BGR_MEAN, VARIANCES, Masks, RetinaFace, anchor_grid, area_masks, load_retinaface

RGB_MEAN = BGR_MEAN[::-1]  # (123, 117, 104)
STRIDE = 32  # input sides are multiples of this
# Programs kept in memory for a process that meets the same bound again after its cache folder changed.
_LOWERED: dict[str, bytes] = {}


class RGBRetinaFace(nn.Module):
    """RetinaFace on NHWC float32 RGB minus :data:`RGB_MEAN` (sides multiples of 32, zero padding) -> ``loc``
    (N, A, 4), ``conf`` (N, A, 2), ``landmarks`` (N, A, 10), as :class:`~ghostfacenets.models.retinaface.RetinaFace`
    on BGR NCHW."""

    def __init__(self, model: RetinaFace | None = None) -> None:
        super().__init__()
        self.net = copy.deepcopy(model) if model is not None else load_retinaface()
        first = self.net.fx.stage1[0][0]
        with torch.no_grad():  # input channels RGB instead of BGR
            first.weight.copy_(first.weight.flip(1))
        self.net.eval()

    def forward(self, x: torch.Tensor, masks: Masks | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net(x.permute(0, 3, 1, 2), masks)


class DecodedRetinaFace(nn.Module):
    """RetinaFace for one fixed square input ``size`` with the anchor decoding inside: (``image`` NHWC float32
    (1, size, size, 3) RGB minus :data:`RGB_MEAN` with the photo at the top left, ``photo_size`` float32 (1, 2) the
    photo's height and width there) -> ``scores`` (1, A) face probability, ``boxes`` (1, A, 4) x1, y1, x2, y2 and
    ``landmarks`` (1, A, 10) x, y of the five points, in input pixels. The network computes exactly what it computes
    on the photo alone padded to multiples of 32 (:func:`~ghostfacenets.models.retinaface.area_masks`); anchors
    beyond that area score 0. Thresholding and non-maximum suppression are left to the caller."""

    def __init__(self, size: int, model: RetinaFace | None = None) -> None:
        super().__init__()
        if size % STRIDE:
            raise GhostFaceNetsError(f"the detector size must be a multiple of {STRIDE}, got {size}")
        self.size = size
        self.detector = RGBRetinaFace(model)
        anchors = torch.from_numpy(anchor_grid(size, size))
        self.register_buffer("centres", anchors[None, :, :2].clone(), persistent=False)
        self.register_buffer("sides", anchors[None, :, 2:].clone(), persistent=False)

    def forward(self, x: torch.Tensor, photo_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        area = torch.ceil(photo_size[0] / STRIDE) * STRIDE  # (height, width) padded as the package pads
        loc, conf, points = self.detector(x, area_masks(area[0], area[1], self.size))
        inside = (self.centres[..., 0] < area[1]) & (self.centres[..., 1] < area[0])
        centre_var, size_var = VARIANCES
        centres = self.centres + loc[..., :2] * (centre_var * self.sides)
        half = self.sides * torch.exp(loc[..., 2:] * size_var) / 2
        boxes = torch.cat([centres - half, centres + half], dim=-1)
        n = points.shape[1]
        offsets = points.reshape(1, n, 5, 2) * (centre_var * self.sides[:, :, None, :])
        landmarks = (self.centres[:, :, None, :] + offsets).reshape(1, n, 10)
        return conf[..., 1] * inside.to(conf.dtype), boxes, landmarks


def padded(side: int) -> int:
    """``side`` rounded up to a multiple of 32."""
    return -(-side // STRIDE) * STRIDE


def executorch_detector_bytes(bound: int, calibration: list[np.ndarray] | None = None) -> bytes:
    """An ExecuTorch program (XNNPACK) of :class:`RGBRetinaFace` for inputs (1, H, W, 3) with H and W multiples of
    32 up to ``bound`` (rounded up to a multiple of 32), float32, or int8 when ``calibration`` (network inputs as
    :class:`RGBRetinaFace` takes them) is given."""
    from executorch.exir import to_edge_transform_and_lower

    from .executorch import _partitioner, _require

    _require()
    bound = padded(bound)
    module: nn.Module = RGBRetinaFace()
    sample = torch.zeros(1, min(bound, 480), min(bound, 640), 3)
    steps = bound // STRIDE
    height, width = torch.export.Dim("rows", min=1, max=steps), torch.export.Dim("columns", min=1, max=steps)
    dynamic = ({1: STRIDE * height, 2: STRIDE * width},)
    if calibration is not None:
        module = quantized_detector(module, calibration, sample, dynamic)
    program = torch.export.export(module, (sample,), dynamic_shapes=dynamic)
    edge = to_edge_transform_and_lower(program, partitioner=[_partitioner()])
    return bytes(edge.to_executorch().buffer)


def quantized_detector(
    module: nn.Module, calibration: list[np.ndarray], sample: torch.Tensor, dynamic: Any = None
) -> nn.Module:
    """``module`` quantised to int8 for XNNPACK (the package's XNNPACK quantizer, per-channel weights), calibrated
    on ``calibration``: float32 NHWC inputs (1, H, W, 3) as the module takes them."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .executorch import _quantizer

    if not calibration:
        raise GhostFaceNetsError("int8 detection needs calibration photos")
    graph = torch.export.export(module, (sample,), dynamic_shapes=dynamic).module()
    prepared = prepare_pt2e(graph, _quantizer())
    with torch.no_grad():
        for x in calibration:
            prepared(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return convert_pt2e(prepared)


def cached_detector_program(bound: int) -> Path:
    """The float32 detector program for inputs up to ``bound`` pixels a side, lowered once and kept in the package
    cache (``GHOSTFACENETS_HOME/executorch``, keyed by the bound and the ExecuTorch, torch and package versions):
    lowering takes a minute, loading milliseconds."""
    from .. import __version__
    from ..hub import cache_dir

    bound = padded(bound)
    key = hashlib.sha256(
        json.dumps(["retinaface-mnet0.25", bound, __version__, torch.__version__, version("executorch")]).encode()
    ).hexdigest()[:32]
    path = cache_dir() / "executorch" / f"retinaface-{key}.pte"
    if not path.is_file():
        if key not in _LOWERED:
            _LOWERED[key] = executorch_detector_bytes(bound)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            f.write(_LOWERED[key])
    return path
