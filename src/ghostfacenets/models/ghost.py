"""Ghost modules, DFC attention, squeeze-excite and the ghost bottleneck, as the official Keras code builds them.

Module registration order follows the official V1 layer creation order (spec 5.1); the Keras converter relies on it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import HardSigmoidKeras2, HardSigmoidTorch, batch_norm, conv2d, make_divisible, prelu


class GhostModule(nn.Module):
    """Primary 1x1 conv plus a cheap 3x3 depthwise conv of its output, concatenated (primary first)."""

    def __init__(self, in_channels: int, out_channels: int, act: bool, version: int, bn_eps: float) -> None:
        super().__init__()
        primary = out_channels // 2 if version == 1 else math.ceil(out_channels / 2)
        self.out_channels = 2 * primary
        self.primary_conv = conv2d(in_channels, primary, 1)
        self.primary_bn = batch_norm(primary, bn_eps)
        self.primary_act = prelu(primary) if act else nn.Identity()
        self.cheap_conv = conv2d(primary, primary, 3, groups=primary)
        self.cheap_bn = batch_norm(primary, bn_eps)
        self.cheap_act = prelu(primary) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary_act(self.primary_bn(self.primary_conv(x)))
        cheap = self.cheap_act(self.cheap_bn(self.cheap_conv(primary)))
        return torch.cat([primary, cheap], dim=1)


class DFCAttention(nn.Module):
    """GhostNetV2's decoupled fully-connected attention gate, upsampled bilinearly as GhostFaceNetV2 does."""

    def __init__(self, in_channels: int, out_channels: int, bn_eps: float) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2)
        self.conv = conv2d(in_channels, out_channels, 1)
        self.bn = batch_norm(out_channels, bn_eps)
        self.conv_h = conv2d(out_channels, out_channels, (1, 5), groups=out_channels)
        self.bn_h = batch_norm(out_channels, bn_eps)
        self.conv_v = conv2d(out_channels, out_channels, (5, 1), groups=out_channels)
        self.bn_v = batch_norm(out_channels, bn_eps)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        gate = self.bn(self.conv(self.pool(x)))
        gate = self.bn_v(self.conv_v(self.bn_h(self.conv_h(gate))))
        return F.interpolate(torch.sigmoid(gate), size=size, mode="bilinear", align_corners=False)


class GhostModuleDFC(GhostModule):
    """A ghost module whose output is multiplied by a DFC attention gate computed from the module input."""

    def __init__(self, in_channels: int, out_channels: int, act: bool, version: int, bn_eps: float) -> None:
        super().__init__(in_channels, out_channels, act, version, bn_eps)
        self.dfc = DFCAttention(in_channels, self.out_channels, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * self.dfc(x, (out.shape[-2], out.shape[-1]))


class SqueezeExcite(nn.Module):
    """Mean -> 1x1 conv (bias) -> PReLU -> 1x1 conv (bias) -> hard-sigmoid gate (Keras-2 in V1, torch in V2)."""

    def __init__(self, channels: int, ratio: float, version: int) -> None:
        super().__init__()
        hidden = make_divisible(channels * ratio)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = prelu(hidden)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)
        self.gate: nn.Module = HardSigmoidKeras2() if version == 1 else HardSigmoidTorch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(scale))))


class GhostBottleneck(nn.Module):
    """Ghost1 (PReLU) -> [strided DW + BN] -> [SE] -> Ghost2 (linear), plus identity or conv shortcut."""

    def __init__(
        self,
        in_channels: int,
        expansion: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        se_ratio: float,
        use_dfc: bool,
        version: int,
        bn_eps: float,
    ) -> None:
        super().__init__()
        tf_same = version == 1
        ghost1 = GhostModuleDFC if use_dfc else GhostModule
        self.ghost1 = ghost1(in_channels, expansion, True, version, bn_eps)
        mid = self.ghost1.out_channels
        self.down_conv: nn.Module | None
        self.down_bn: nn.Module | None
        if stride > 1:
            self.down_conv = conv2d(mid, mid, kernel_size, stride, groups=mid, tf_same=tf_same)
            self.down_bn = batch_norm(mid, bn_eps)
        else:
            self.down_conv = None
            self.down_bn = None
        self.se = SqueezeExcite(mid, se_ratio, version) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid, out_channels, False, version, bn_eps)
        self.shortcut: nn.Module
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                conv2d(in_channels, in_channels, kernel_size, stride, groups=in_channels, tf_same=tf_same),
                batch_norm(in_channels, bn_eps),
                conv2d(in_channels, self.ghost2.out_channels, 1),
                batch_norm(self.ghost2.out_channels, bn_eps),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.down_conv is not None and self.down_bn is not None:
            y = self.down_bn(self.down_conv(y))
        if self.se is not None:
            y = self.se(y)
        return self.shortcut(x) + self.ghost2(y)
