"""Five-point alignment as a PyTorch module, so that it can live inside an exported program: the same numbers as
:func:`ghostfacenets.data.align.align_face` (OpenCV's ``estimateAffinePartial2D`` with every point an inlier and
``warpAffine`` with bilinear sampling, black outside the image, rounded to whole grey levels), written only with
operators every exporter takes (arithmetic, floor, round, a row lookup).

The similarity transform is the least-squares one in closed form: rotation and scale ``a = Σ(p·q) / Σ|p|²``,
``b = Σ(p×q) / Σ|p|²`` over the landmarks ``p`` and template points ``q`` taken about their centroids, which is the
minimum that OpenCV's Levenberg-Marquardt refinement converges to. Each crop pixel (x, y) samples the photo at the
inverse transform of (x, y), from the four neighbouring pixels; neighbours outside the photo count as black.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import ARCFACE_TEMPLATE, INPUT_SIZE


class SimilarityAlign(nn.Module):
    """(``image`` uint8 (1, H, W, 3), ``landmarks`` float32 (1, 5, 2) in image pixels) -> the aligned crop(s)
    float32 (K, size, size, 3) holding whole grey levels 0-255; K = 2 with ``mirrored`` (the crop and its left-right
    mirror, sampled directly), else 1."""

    template: torch.Tensor
    template_centre: torch.Tensor
    dx: torch.Tensor
    dy: torch.Tensor

    def __init__(self, size: int = INPUT_SIZE, mirrored: bool = False) -> None:
        super().__init__()
        self.size = size
        template = torch.from_numpy(ARCFACE_TEMPLATE).double() * (size / INPUT_SIZE)
        self.register_buffer("template_centre", template.mean(0).float(), persistent=False)
        self.register_buffer("template", (template - template.mean(0)).float(), persistent=False)
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        columns = [xs.reshape(-1)] + ([(size - 1 - xs).reshape(-1)] if mirrored else [])
        rows = [ys.reshape(-1)] * len(columns)
        centre = self.template_centre.double()
        self.register_buffer("dx", (torch.cat(columns).double() - centre[0]).float(), persistent=False)
        self.register_buffer("dy", (torch.cat(rows).double() - centre[1]).float(), persistent=False)
        self.crops = len(columns)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        height, width = int(image.shape[1]), int(image.shape[2])
        points = landmarks[0]
        centre = points.mean(0)
        p = points - centre
        q = self.template
        norm = (p * p).sum()
        a = (p[:, 0] * q[:, 0] + p[:, 1] * q[:, 1]).sum() / norm
        b = (p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum() / norm
        scale = a * a + b * b
        # The inverse similarity: photo = centre + R(-θ) / s * (crop - template centre).
        sx = centre[0] + (a * self.dx + b * self.dy) / scale
        sy = centre[1] + (a * self.dy - b * self.dx) / scale
        x0, y0 = torch.floor(sx), torch.floor(sy)
        fx, fy = sx - x0, sy - y0
        xs = torch.stack([x0, x0 + 1, x0, x0 + 1])  # (4, P): the four neighbours
        ys = torch.stack([y0, y0, y0 + 1, y0 + 1])
        weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
        inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
        weights = weights * inside.to(weights.dtype)
        index = (ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)).to(torch.int32).reshape(-1)
        # A row lookup in the photo's pixels, in uint8 (the window is 12 MB as uint8, four times that as float32):
        # ``embedding`` is the gather every exporter maps to a plain lookup (LiteRT's EMBEDDING_LOOKUP).
        pixels = F.embedding(index, image.reshape(height * width, 3)).to(torch.float32)
        crops = (pixels.reshape(4, -1, 3) * weights[..., None]).sum(0)
        return torch.round(crops).reshape(self.crops, self.size, self.size, 3)
