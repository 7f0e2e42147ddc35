"""Models with non-trivial weights for tests."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with BatchNorm affine terms, PReLU slopes and biases far from their initial values and
    BatchNorm statistics measured on random images (so activations keep a normal scale through the 16 blocks), so
    that a fold that drops or misplaces any of them changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
        elif isinstance(m, nn.Conv2d):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * m.weight.std())
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    size = getattr(getattr(model, "config", None), "input_size", None)
    if size:  # a whole GhostFaceNet: statistics from data
        model.train()
        model(torch.randn(8, 3, size, size, generator=g))
    else:  # a lone BatchNorm: random statistics
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return model.eval()
