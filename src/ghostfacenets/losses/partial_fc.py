"""Partial FC: class centres sharded over ranks, sampled negatives, and a softmax cross-entropy across the shards.

Each rank holds the centres of classes ``[class_start, class_end)``. The embeddings of the whole global batch are
gathered to every rank; every rank scores them against its (sampled) centres, and the softmax normaliser and the
target logits are summed across ranks, so the loss equals a full softmax over all classes (An et al., "Partial FC",
2021; arcface_torch's ``PartialFC_V2``). With one process and no process group it is an ordinary normalised
classifier (the official ``NormDense``) with a margin softmax; at ``sample_rate=1`` nothing is sampled.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .margins import CombinedMargin

_NORM_EPS = math.sqrt(1e-5)  # tf.nn.l2_normalize(epsilon=1e-5) in the official NormDense
_INIT_BLOCK = 4096  # classes per independently seeded block of the initial centres


def class_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """Classes ``[start, end)`` held by ``rank``: contiguous, the first ``num_classes % world_size`` ranks one more."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _group_info(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if group is None or not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class _AllGather(torch.autograd.Function):
    """Concatenate equal-sized tensors of all ranks; the gradient flows back to the owning rank.

    The backward sums the gradients of all ranks and multiplies by the world size, because DDP averages the
    backbone gradients over ranks while the loss here is already the mean over the global batch.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        ctx.rank, ctx.world = dist.get_rank(group), dist.get_world_size(group)
        ctx.size = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(ctx.world)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        local = grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]
        return local * ctx.world, None


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of logits whose columns are split over ranks; label -1 = target on another rank."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, labels: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        distributed = group is not None
        row_max = logits.max(dim=1, keepdim=True).values
        if distributed:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - row_max
        probs = torch.exp(shifted)
        denom = probs.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(denom, group=group)
        probs /= denom
        valid = labels >= 0
        columns = labels.clamp_min(0).unsqueeze(1)
        target = shifted.gather(1, columns).squeeze(1).masked_fill(~valid, 0.0)
        if distributed:
            dist.all_reduce(target, group=group)
        ctx.save_for_backward(probs, columns, valid)
        return (torch.log(denom.squeeze(1)) - target).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        probs, columns, valid = ctx.saved_tensors
        grad_logits = probs.scatter_add(1, columns, -valid.to(probs.dtype).unsqueeze(1))
        return grad_logits * (grad / probs.shape[0]), None, None


def sharded_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Softmax cross-entropy (mean over rows) when each rank holds some of the columns; ``group=None``: one process."""
    return _ShardedCrossEntropy.apply(logits, labels, group)


def initial_centres(
    num_classes: int, subcenters: int, embedding_size: int, start: int, end: int, seed: int = 0
) -> torch.Tensor:
    """Rows ``[start, end)`` of the official NormDense init (glorot normal over (D, C*K)) -> (end-start, K, D).

    Centres are drawn in fixed blocks of classes, each from its own seed, so a rank draws only its own blocks and
    any split of the classes over ranks gives the same centres.
    """
    std = math.sqrt(2.0 / (embedding_size + num_classes * subcenters)) / 0.87962566103423978
    out = torch.empty(end - start, subcenters, embedding_size)
    for block in range(start // _INIT_BLOCK, (end - 1) // _INIT_BLOCK + 1):
        lo, hi = block * _INIT_BLOCK, min((block + 1) * _INIT_BLOCK, num_classes)
        generator = torch.Generator().manual_seed(seed * 1000003 + block)
        values = torch.empty(hi - lo, subcenters, embedding_size)
        nn.init.trunc_normal_(values, 0.0, std, -2 * std, 2 * std, generator=generator)
        a, b = max(lo, start), min(hi, end)
        out[a - start : b - start] = values[a - lo : b - lo]
    return out


class PartialFC(nn.Module):
    """Normalised class centres (this rank's shard, K sub-centres each) with a margin softmax loss.

    ``forward(embeddings, labels, scale)`` takes this rank's embeddings (N, D) and global labels (N,) and returns the
    mean loss over the global batch. ``sample_rate`` < 1 keeps, per step, the centres of the batch's classes plus
    random others up to ``ceil(sample_rate * local classes)``.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: CombinedMargin,
        subcenters: int = 1,
        sample_rate: float = 1.0,
        group: dist.ProcessGroup | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if subcenters < 1:
            raise ValueError(f"subcenters must be at least 1, got {subcenters}")
        self.rank, self.world_size = _group_info(group)
        self.group = group if self.world_size > 1 else None
        if num_classes < self.world_size:
            raise ValueError(f"{num_classes} classes cannot be sharded over {self.world_size} processes")
        self.embedding_size, self.num_classes, self.subcenters = embedding_size, num_classes, subcenters
        self.class_start, self.class_end = class_range(num_classes, self.rank, self.world_size)
        self.num_local = self.class_end - self.class_start
        self.num_sample = max(1, math.ceil(sample_rate * self.num_local))
        self.sample_rate = sample_rate
        self.margin = margin
        self.weight = nn.Parameter(torch.empty(self.num_local, subcenters, embedding_size))
        self.negative_generator = torch.Generator()
        self.reset_parameters(seed)

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, subcenters={self.subcenters}, "
            f"classes=[{self.class_start}, {self.class_end}), sample_rate={self.sample_rate}"
        )

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """Official NormDense init for this rank's shard; the same centres whatever the number of ranks."""
        self.weight.copy_(
            initial_centres(
                self.num_classes, self.subcenters, self.embedding_size, self.class_start, self.class_end, seed
            )
        )
        self.negative_generator.manual_seed(seed * 1000003 + 999983 + self.rank)

    def _sample(self, local_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the shard to use (sorted) and the labels re-indexed into them (-1 kept)."""
        positive = torch.unique(local_labels[local_labels >= 0])
        if self.num_sample <= positive.numel():
            index = positive
        else:
            score = torch.rand(self.num_local, generator=self.negative_generator).to(local_labels.device)
            score[positive] = 2.0
            index = torch.topk(score, self.num_sample).indices.sort().values
        remapped = torch.where(local_labels >= 0, torch.searchsorted(index, local_labels.clamp_min(0)), local_labels)
        return index, remapped

    def cosine(self, embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Cosine between embeddings (N, D) and centres (C, K, D), max over the K sub-centres -> (N, C)."""
        dtype = torch.promote_types(embeddings.dtype, torch.float32)  # float32 under AMP, float64 kept for checks
        emb = F.normalize(embeddings.to(dtype), dim=1, eps=_NORM_EPS)
        centres = F.normalize(weight.to(dtype), dim=2, eps=_NORM_EPS)
        cos = torch.einsum("nd,ckd->nck", emb, centres)
        return cos.amax(dim=2).clamp(-1.0, 1.0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
        if self.group is not None:
            embeddings = _AllGather.apply(embeddings, self.group)
            gathered = [torch.empty_like(labels) for _ in range(self.world_size)]
            dist.all_gather(gathered, labels.contiguous(), group=self.group)
            labels = torch.cat(gathered)
        labels = labels.long()
        in_shard = (labels >= self.class_start) & (labels < self.class_end)
        local_labels = torch.where(in_shard, labels - self.class_start, torch.full_like(labels, -1))
        weight: torch.Tensor = self.weight
        if self.num_sample < self.num_local:
            index, local_labels = self._sample(local_labels)
            weight = weight[index]
        logits = self.margin(self.cosine(embeddings, weight), local_labels, scale)
        return sharded_cross_entropy(logits, local_labels, self.group)
