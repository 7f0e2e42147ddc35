"""Process-group set-up for ``torchrun`` (NCCL on GPU, gloo on CPU) and the few collectives the trainer needs.

Started without ``torchrun`` (no ``WORLD_SIZE`` in the environment) the trainer runs as one process and never
creates a process group, so a single GPU or CPU needs neither NCCL nor gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..errors import GhostFaceNetsError


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is: rank and world size, its device, and the process group (None for one process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    group: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.group is not None

    def barrier(self) -> None:
        if self.group is not None:
            dist.barrier(group=self.group)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable, small), in rank order."""
        if self.group is None:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.group is None:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (no-op for one process)."""
        if self.group is not None:
            dist.all_reduce(tensor, group=self.group)
        return tensor


def process_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU when CUDA is available, else CPU; ``cuda`` -> ``cuda:<local rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GhostFaceNetsError("train.device asks for CUDA but no GPU is visible; use train.device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """One-process context, or join the process group that ``torchrun`` describes in the environment."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = process_device(device_name, local_rank)
    if world_size == 1:
        return DistributedContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return DistributedContext(dist.get_rank(), local_rank, dist.get_world_size(), device, dist.group.WORLD)


def shutdown(context: DistributedContext) -> None:
    """Leave the process group (if this process created one)."""
    if context.group is not None and dist.is_initialized():
        dist.destroy_process_group()
