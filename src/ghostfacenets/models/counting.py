"""Parameter, MAC and FLOP counts, the latter in the paper's convention (spec 2.1).

The paper's "FLOPs" come from kecam's ``get_flops``: TensorFlow's profiler ``total_float_ops // 2`` on the Keras
graph. The profiler counts a multiply-accumulate of a convolution as 2 and one per element for the element-wise ops it
knows (Neg, Mul, Add, BiasAdd, Minimum, Maximum, RealDiv, Mean over its input, AvgPool per window element), and
nothing for BatchNorm, ReLU/Relu6, Sigmoid, Pad, Concat or bilinear resize. ``count`` replays those rules over the
PyTorch modules, which mirror the Keras layers one to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .ghost import DFCAttention, GhostBottleneck, GhostModuleDFC, SqueezeExcite
from .ghostfacenet import GhostFaceNet
from .layers import HardSigmoidKeras2


@dataclass(frozen=True)
class Counts:
    """``params``: trainable (PyTorch); ``params_keras_total``: plus BN running statistics (Keras' total);
    ``mflops``: paper convention; ``mmacs``: plain convolution multiply-accumulates. Per 1 image."""

    params: int
    params_keras_total: int
    mflops: float
    mmacs: float


def _tf_float_ops(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> tuple[float, float]:
    """(TF-profiler float ops, conv MACs) of one module call, excluding its children."""
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        macs = output.numel() * per_output
        return 2.0 * macs + (output.numel() if module.bias is not None else 0), float(macs)
    if isinstance(module, nn.PReLU):  # Keras: relu(x) - alpha * relu(-x): Neg, Neg(alpha), Mul, Add
        return 3.0 * output.numel() + module.weight.numel(), 0.0
    if isinstance(module, nn.BatchNorm1d):  # tf.nn.batch_normalization on a 2-D input (not fused)
        return 2.0 * output.numel() + 5.0 * module.num_features, 0.0
    if isinstance(module, SqueezeExcite):  # Mean over the input, gate arithmetic, the final Mul
        channels = module.expand.out_channels * inputs[0].shape[0]
        gate = 4 if isinstance(module.gate, HardSigmoidKeras2) else 2  # mul, add, min, max / add, div
        return float(inputs[0].numel() + gate * channels + output.numel()), 0.0
    if isinstance(module, GhostBottleneck):  # the residual Add
        return float(output.numel()), 0.0
    if isinstance(module, GhostModuleDFC):  # output * gate
        return float(output.numel()), 0.0
    if isinstance(module, DFCAttention):  # AvgPool 2x2: 4 per pooled element
        n, c, h, w = inputs[0].shape
        return 4.0 * n * c * (h // 2) * (w // 2), 0.0
    return 0.0, 0.0


@torch.no_grad()
def count(model: GhostFaceNet) -> Counts:
    """Count parameters, paper-convention MFLOPs and convolution MMACs for one input image."""
    totals = [0.0, 0.0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        flops, macs = _tf_float_ops(module, inputs, output)
        totals[0] += flops
        totals[1] += macs

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        size = model.config.input_size
        device = next(model.parameters()).device
        model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    running = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return Counts(params, params + running, totals[0] / 2 / 1e6, totals[1] / 1e6)
