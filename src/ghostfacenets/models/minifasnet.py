"""MiniFASNet: the passive (single-frame) face anti-spoofing networks of minivision-ai's Silent-Face-Anti-Spoofing
(Apache-2.0), rebuilt in this package so that the released weights load with their own parameter names.

A MiniFASNet is a pruned MobileFaceNet for 80x80 input: depthwise-separable residual stages, a 5x5 global depthwise
convolution, a 128-d embedding and a 3-class head (class 1 = real face; 0 and 2 are the two kinds of attack the
authors trained on). ``MiniFASNetV1SE`` adds a squeeze-excitation module to the last block of each residual stage.
The channel counts of each layer come from the authors' pruning (``KEEP_V1``, ``KEEP_V2``). Input: float32 NCHW BGR
pixels 0-255, not normalised (the reference's ``ToTensor`` leaves out the division by 255).
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Sequence

import torch
from torch import nn

from .fuse import fold_conv_bn

INPUT_SIZE = 80
NUM_CLASSES = 3
REAL_CLASS = 1
EMBEDDING_SIZE = 128
# Channels kept by the authors' pruning: "1.8M" (V1, V1SE) and "1.8M_" (V2) of the reference's keep_dict.
KEEP_V1 = (
    32, 32, 103, 103, 64, 13, 13, 64, 26, 26, 64, 13, 13, 64, 52, 52, 64, 231, 231, 128, 154, 154, 128, 52, 52,
    128, 26, 26, 128, 52, 52, 128, 26, 26, 128, 26, 26, 128, 308, 308, 128, 26, 26, 128, 26, 26, 128, 512, 512,
)  # fmt: skip
KEEP_V2 = (
    32, 32, 103, 103, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 231, 231, 128, 231, 231, 128, 52, 52,
    128, 26, 26, 128, 77, 77, 128, 26, 26, 128, 26, 26, 128, 308, 308, 128, 26, 26, 128, 26, 26, 128, 512, 512,
)  # fmt: skip


class ConvBlock(nn.Module):
    """Convolution, BatchNorm and PReLU (``prelu`` off: the linear projection of a block)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        prelu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c_out)
        self.prelu: nn.Module = nn.PReLU(c_out) if prelu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Global average, 1x1 convolution down by ``reduction``, BatchNorm, ReLU, 1x1 up, BatchNorm, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(channels // reduction)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.bn2: nn.Module = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.bn1(self.fc1(x.mean(dim=(2, 3), keepdim=True))).relu()
        return x * torch.sigmoid(self.bn2(self.fc2(gate)))


class DepthWise(nn.Module):
    """1x1 expansion, 3x3 depthwise (``stride``), 1x1 linear projection; with ``residual`` the input is added back
    (after the squeeze-excitation gate when ``se``)."""

    def __init__(self, channels: Sequence[int], stride: int = 1, residual: bool = False, se: bool = False) -> None:
        super().__init__()
        c_in, c_expand, c_dw, c_out = channels
        self.conv = ConvBlock(c_in, c_expand)
        self.conv_dw = ConvBlock(c_expand, c_dw, kernel=3, stride=stride, padding=1, groups=c_expand)
        self.project = ConvBlock(c_dw, c_out, prelu=False)
        self.residual = residual
        self.se_module = SqueezeExcite(c_out) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        if not self.residual:
            return out
        if self.se_module is not None:
            out = self.se_module(out)
        return x + out


class Residual(nn.Module):
    """A stage of residual ``DepthWise`` blocks; with ``se`` the last one has a squeeze-excitation gate."""

    def __init__(self, keep: Sequence[int], start: int, blocks: int, se: bool) -> None:
        super().__init__()
        self.model = nn.Sequential(
            *(
                DepthWise(keep[start + 3 * i : start + 3 * i + 4], residual=True, se=se and i == blocks - 1)
                for i in range(blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """MiniFASNet for 80x80 input: (N, 3, 80, 80) BGR 0-255 -> (N, 3) class logits (class 1 = real face).

    ``keep``: the pruned channel counts (:data:`KEEP_V1` or :data:`KEEP_V2`); ``se``: squeeze-excitation in the
    last block of each residual stage (MiniFASNetV1SE). Parameter names are those of the reference's state dicts.
    """

    def __init__(self, keep: Sequence[int], se: bool = False, name: str = "MiniFASNet") -> None:
        super().__init__()
        self.name = name
        kernel = (INPUT_SIZE + 15) // 16  # the reference's get_kernel: 5 for 80x80
        self.conv1 = ConvBlock(3, keep[0], kernel=3, stride=2, padding=1)
        self.conv2_dw = ConvBlock(keep[0], keep[1], kernel=3, padding=1, groups=keep[1])
        self.conv_23 = DepthWise(keep[1:5], stride=2)
        self.conv_3 = Residual(keep, 4, 4, se)
        self.conv_34 = DepthWise(keep[16:20], stride=2)
        self.conv_4 = Residual(keep, 19, 6, se)
        self.conv_45 = DepthWise(keep[37:41], stride=2)
        self.conv_5 = Residual(keep, 40, 2, se)
        self.conv_6_sep = ConvBlock(keep[46], keep[47])
        self.conv_6_dw = ConvBlock(keep[47], keep[48], kernel=kernel, groups=keep[48], prelu=False)
        self.linear = nn.Linear(512, EMBEDDING_SIZE, bias=False)
        self.bn: nn.Module = nn.BatchNorm1d(EMBEDDING_SIZE)
        self.prob = nn.Linear(EMBEDDING_SIZE, NUM_CLASSES, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2_dw(self.conv1(x))
        out = self.conv_5(self.conv_45(self.conv_4(self.conv_34(self.conv_3(self.conv_23(out))))))
        out = self.conv_6_dw(self.conv_6_sep(out)).flatten(1)
        return self.prob(self.bn(self.linear(out)))


def minifasnet_v2() -> MiniFASNet:
    """MiniFASNetV2 (the released model for patches at 2.7x the face box)."""
    return MiniFASNet(KEEP_V2, se=False, name="MiniFASNetV2")


def minifasnet_v1se() -> MiniFASNet:
    """MiniFASNetV1SE (the released model for patches at 4x the face box)."""
    return MiniFASNet(KEEP_V1, se=True, name="MiniFASNetV1SE")


@torch.no_grad()
def fuse_minifasnet(model: MiniFASNet) -> MiniFASNet:
    """An inference-only copy of ``model`` with every BatchNorm folded into the convolution or linear layer before
    it (the same outputs up to float rounding)."""
    fused = copy.deepcopy(model).eval()

    def fold(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
        return fold_conv_bn(conv, typing.cast(nn.BatchNorm2d, bn))

    for module in fused.modules():
        if isinstance(module, ConvBlock):
            module.conv, module.bn = fold(module.conv, module.bn), nn.Identity()
        elif isinstance(module, SqueezeExcite):
            module.fc1, module.bn1 = fold(module.fc1, module.bn1), nn.Identity()
            module.fc2, module.bn2 = fold(module.fc2, module.bn2), nn.Identity()
    bn, linear = fused.bn, fused.linear
    assert isinstance(bn, nn.BatchNorm1d) and bn.running_var is not None and bn.running_mean is not None
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    folded = nn.Linear(linear.in_features, linear.out_features)
    folded.weight.copy_(linear.weight.double() * scale[:, None])
    folded.bias.copy_(bn.bias.double() - bn.running_mean.double() * scale)
    fused.linear, fused.bn = folded, nn.Identity()
    return fused.requires_grad_(False)
