"""Inference-ready GhostFaceNets: every BatchNorm folded into the convolution before it, SE gates simplified.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``w' = w * s`` and ``b' = (b - mean) * s + beta``, ``s = gamma /
sqrt(var + eps)``. The SE gates ``clip(a x + 0.5, 0, 1)`` (a = 0.2 in V1, 1/6 in V2) likewise take ``a`` and ``0.5``
into the SE's last convolution and become a plain ``clip(x, 0, 1)``. V1's TF-"same" convolutions, which work out their
(asymmetric) padding from the input size at every call, get the fixed padding of the model's input size instead.

A fused model gives the same embeddings as the original (up to float rounding) with about half the operations, for
inputs of ``config.input_size`` only. It is for inference (no BatchNorm left to train) and its state dict no longer
matches the architecture, so save the original model, not the fused one.
"""

from __future__ import annotations

import copy
import itertools
import math
import typing

import torch
from torch import nn

from .ghost import DFCAttention, GhostBottleneck, GhostModule, SqueezeExcite
from .ghostfacenet import STRIDES, GDCHead, GhostFaceNet
from .layers import Conv2dSame, HardSigmoidKeras2, HardSigmoidTorch, tf_same_padding

# (conv, batch norm) attribute pairs of each block type, in the order the forward pass applies them.
_CONV_BN_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    GhostModule: (("primary_conv", "primary_bn"), ("cheap_conv", "cheap_bn")),
    DFCAttention: (("conv", "bn"), ("conv_h", "bn_h"), ("conv_v", "bn_v")),
    GhostBottleneck: (("down_conv", "down_bn"),),
    GDCHead: (("dw", "bn"), ("conv", "bn_embedding")),
}
# SE gates clip(slope * x + 0.5, 0, 1) by class.
_GATE_SLOPES: dict[type[nn.Module], float] = {HardSigmoidKeras2: 0.2, HardSigmoidTorch: 1.0 / 6.0}


class Clamp01(nn.Module):
    """clip(x, 0, 1): a hard-sigmoid gate whose slope and offset were folded into the convolution before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` whose output equals ``bn(conv(x))`` with ``bn`` in eval mode (computed in float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm has {bn.num_features} features but the convolution {conv.out_channels} outputs")
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    fused = copy.deepcopy(conv)
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).to(dtype), requires_grad=False)
    fused.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype), requires_grad=False)
    return fused


@torch.no_grad()
def _fold_gate(se: SqueezeExcite) -> None:
    slope = _GATE_SLOPES[type(se.gate)]
    expand = se.expand
    bias = expand.bias.double() if expand.bias is not None else torch.zeros(expand.out_channels, dtype=torch.float64)
    dtype = expand.weight.dtype
    expand.weight = nn.Parameter((expand.weight.double() * slope).to(dtype), requires_grad=False)
    expand.bias = nn.Parameter((bias * slope + 0.5).to(dtype), requires_grad=False)
    se.gate = Clamp01()


def _fuse_sequential(seq: nn.Sequential) -> None:
    """Fold every (Conv2d, BatchNorm) neighbour pair of a Sequential, in place."""
    names = list(seq._modules)
    for first, second in itertools.pairwise(names):
        conv, bn = seq._modules[first], seq._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            seq._modules[first] = fold_conv_bn(conv, bn)
            seq._modules[second] = nn.Identity()


def _static_same_conv(conv: Conv2dSame, height: int, width: int) -> nn.Module:
    """``conv`` as a plain convolution with the fixed TF-"same" padding of an input of ``height`` x ``width``."""
    top, bottom = tf_same_padding(height, conv.kernel_size[0], conv.stride[0])
    left, right = tf_same_padding(width, conv.kernel_size[1], conv.stride[1])
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        typing.cast(tuple[int, int], conv.kernel_size),
        typing.cast(tuple[int, int], conv.stride),
        groups=conv.groups,
        bias=conv.bias is not None,
        dtype=conv.weight.dtype,
        device=conv.weight.device,
    )
    plain.load_state_dict(conv.state_dict())
    plain.requires_grad_(False)
    if top == bottom and left == right:
        plain.padding = (top, left)
        return plain
    return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), plain)


def _freeze_same_padding(model: GhostFaceNet) -> None:
    """Replace every ``Conv2dSame`` by a convolution with the padding of the model's input size, in place."""
    size = model.config.input_size
    stem = model.stem
    if isinstance(stem[0], Conv2dSame):
        stem[0] = _static_same_conv(stem[0], size, size)
    size = math.ceil(size / model.config.stem_stride)
    for block, stride in zip(model.blocks, STRIDES):  # a block's strided convolutions all read the block's input
        if isinstance(block.down_conv, Conv2dSame):
            block.down_conv = _static_same_conv(block.down_conv, size, size)
        if isinstance(block.shortcut, nn.Sequential) and isinstance(block.shortcut[0], Conv2dSame):
            block.shortcut[0] = _static_same_conv(block.shortcut[0], size, size)
        size = math.ceil(size / stride)


def fuse_model(model: GhostFaceNet, inplace: bool = False) -> GhostFaceNet:
    """An inference-only copy of ``model`` (or ``model`` itself with ``inplace``) in eval mode with every BatchNorm
    folded into its convolution, the SE gates simplified, V1's padding fixed for ``config.input_size``, dropout
    removed and gradients off."""
    if not isinstance(model, GhostFaceNet):
        raise TypeError(f"fuse_model expects a GhostFaceNet, got {type(model).__name__}")
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    for module in list(fused.modules()):
        if isinstance(module, nn.Sequential):
            _fuse_sequential(module)
        for base, pairs in _CONV_BN_PAIRS.items():
            if not isinstance(module, base):
                continue
            for conv_name, bn_name in pairs:
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if conv is not None and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    setattr(module, conv_name, fold_conv_bn(conv, bn))
                    setattr(module, bn_name, nn.Identity())
        if isinstance(module, SqueezeExcite) and type(module.gate) in _GATE_SLOPES:
            _fold_gate(module)
        if isinstance(module, GDCHead):
            module.dropout = nn.Identity()
    fused.requires_grad_(False)
    _freeze_same_padding(fused)
    return fused


def is_fused(model: nn.Module) -> bool:
    """True when no BatchNorm is left in ``model``."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
