"""What the optimiser steps: the parameter groups of the official recipe and gradient clipping over every rank."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .distributed import DistributedContext


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution and linear weights only, not on BN, PReLU or biases (the official recipe)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            is_kernel = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            (decay if is_kernel else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def clip_gradients(
    parameters: list[nn.Parameter], centres: nn.Parameter, max_norm: float, context: DistributedContext
) -> torch.Tensor:
    """Scale all gradients so that their global norm (backbone plus every rank's centre shard) is at most
    ``max_norm``; returns the norm before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    squared = sum((g.float().pow(2).sum() for g in grads), torch.zeros((), device=centres.device))
    shard = context.sum(centres.grad.float().pow(2).sum()) if centres.grad is not None else 0.0
    total = torch.sqrt(squared + shard)
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grad in grads + ([centres.grad] if centres.grad is not None else []):
        grad.mul_(factor.to(grad.dtype))
    return total
