"""Small building blocks shared by GhostFaceNetV1 and V2."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int = 4) -> int:
    """Round a channel count as the official code does (divisor 4, truncation, 10 % rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one spatial dimension."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding (asymmetric for even inputs at stride 2), as GhostFaceNetV1 uses."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 1,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    tf_same: bool = False,
) -> nn.Conv2d:
    """A convolution with "same" padding: TF-style (asymmetric) when ``tf_same`` and stride > 1, else k // 2."""
    if tf_same and stride > 1:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
    ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    return nn.Conv2d(in_channels, out_channels, ks, stride, padding=(ks[0] // 2, ks[1] // 2), groups=groups, bias=bias)


def batch_norm(channels: int, eps: float) -> nn.BatchNorm2d:
    """BatchNorm with the official settings: Keras momentum 0.9 (torch 0.1)."""
    return nn.BatchNorm2d(channels, eps=eps, momentum=0.1)


def prelu(channels: int) -> nn.PReLU:
    """Per-channel PReLU initialised at 0.25, which replaces every ReLU in GhostFaceNets."""
    return nn.PReLU(channels, init=0.25)


class HardSigmoidKeras2(nn.Module):
    """Keras 2 ``hard_sigmoid``: clip(0.2 x + 0.5, 0, 1), the SE gate of GhostFaceNetV1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class HardSigmoidTorch(nn.Module):
    """clip(x / 6 + 0.5, 0, 1) (kecam ``hard_sigmoid_torch``), the SE gate of GhostFaceNetV2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardsigmoid(x)
