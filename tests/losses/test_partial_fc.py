"""Partial FC: sharding, sampling, equality with the full softmax, and two gloo processes equal one."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ghostfacenets.losses import PartialFC, class_range, margin_from_name, sharded_cross_entropy
from ghostfacenets.losses.partial_fc import initial_centres


def test_class_ranges_cover_all_classes_once() -> None:
    for classes, world in [(10, 1), (10, 3), (7, 7), (100, 8)]:
        ranges = [class_range(classes, r, world) for r in range(world)]
        covered = [c for start, end in ranges for c in range(start, end)]
        assert covered == list(range(classes))
        assert max(e - s for s, e in ranges) - min(e - s for s, e in ranges) <= 1


def test_sharded_cross_entropy_one_process_is_cross_entropy() -> None:
    logits = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 8, 3, 3, 1, 5])
    ours = sharded_cross_entropy(logits, labels)
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = F.cross_entropy(ref_logits, labels)
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_sample_rate_one_equals_full_softmax() -> None:
    torch.manual_seed(0)
    head = PartialFC(16, 40, margin_from_name("arcface"), sample_rate=1.0).double()
    emb = torch.randn(10, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 40, (10,))
    loss = head(emb, labels, 64.0)
    loss.backward()
    w = head.weight.detach().clone().requires_grad_(True)
    e = emb.detach().clone().requires_grad_(True)
    cos = F.normalize(e, dim=1) @ F.normalize(w[:, 0], dim=1).T
    target = cos[torch.arange(10), labels]
    theta = torch.acos(target)
    margined = torch.where(target > math.cos(math.pi - 0.5), torch.cos(theta + 0.5), -2 - torch.cos(theta + 0.5))
    logits = cos.clone()
    logits[torch.arange(10), labels] = margined
    ref = F.cross_entropy(logits * 64.0, labels)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(emb.grad, e.grad)
    torch.testing.assert_close(head.weight.grad, w.grad)


def test_sampled_negatives_keep_positives_and_equal_softmax_over_the_sample() -> None:
    torch.manual_seed(1)
    head = PartialFC(8, 50, margin_from_name("cosface"), sample_rate=0.2).double()
    assert head.num_sample == 10
    emb = torch.randn(6, 8, dtype=torch.float64)
    labels = torch.tensor([3, 3, 17, 42, 0, 17])
    state = head.negative_generator.get_state()
    loss = head(emb, labels, 30.0)
    loss.backward()
    used = torch.nonzero(head.weight.grad.abs().sum(dim=(1, 2))).squeeze(1)
    assert set(labels.tolist()) <= set(used.tolist()) and used.numel() == 10
    # Same draw again -> the same rows; the loss equals a full softmax restricted to those rows.
    head.negative_generator.set_state(state)
    index, remapped = head._sample(labels.clone())
    assert index.tolist() == used.tolist()
    cos = F.normalize(emb, dim=1) @ F.normalize(head.weight.detach()[index, 0], dim=1).T
    logits = cos.clone()
    logits[torch.arange(6), remapped] -= 0.35
    assert loss.item() == pytest.approx(F.cross_entropy(logits * 30.0, remapped).item(), rel=1e-10)


def test_init_does_not_depend_on_world_size() -> None:
    full = PartialFC(4, 9000, margin_from_name("arcface"), seed=5).weight.detach()
    assert full.shape == (9000, 1, 4)
    for world in (2, 3):
        parts = [initial_centres(9000, 1, 4, *class_range(9000, rank, world), seed=5) for rank in range(world)]
        torch.testing.assert_close(torch.cat(parts), full, rtol=0, atol=0)
    std = math.sqrt(2.0 / (4 + 9000))  # glorot normal
    assert full.std().item() == pytest.approx(std, rel=0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world: int, port: int, emb: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, out: dict
) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        head = PartialFC(emb.shape[1], weight.shape[0], margin_from_name("arcface"), group=dist.group.WORLD).double()
        head.weight.data = weight[head.class_start : head.class_end].clone()
        size = emb.shape[0] // world
        local = emb[rank * size : (rank + 1) * size].clone().requires_grad_(True)
        loss = head(local, labels[rank * size : (rank + 1) * size], 64.0)
        loss.backward()
        out[rank] = (loss.item(), local.grad.clone(), head.weight.grad.clone())
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process() -> None:
    torch.manual_seed(2)
    emb, labels = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 7, (8,))
    weight = torch.randn(7, 1, 6, dtype=torch.float64)
    single = PartialFC(6, 7, margin_from_name("arcface")).double()
    single.weight.data = weight.clone()
    e = emb.clone().requires_grad_(True)
    loss = single(e, labels, 64.0)
    loss.backward()
    out = mp.Manager().dict()
    mp.start_processes(_worker, args=(2, _free_port(), emb, labels, weight, out), nprocs=2, start_method="spawn")
    for rank in range(2):
        rank_loss, emb_grad, weight_grad = out[rank]
        start, end = class_range(7, rank, 2)
        assert rank_loss == pytest.approx(loss.item(), rel=1e-12)
        # Embedding gradients carry the world-size factor that DDP's averaging removes.
        torch.testing.assert_close(emb_grad / 2, e.grad[rank * 4 : (rank + 1) * 4])
        torch.testing.assert_close(weight_grad, single.weight.grad[start:end])


def _sampling_worker(
    rank: int, world: int, port: int, emb: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, out: dict
) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        head = PartialFC(
            emb.shape[1], weight.shape[0], margin_from_name("cosface"), sample_rate=0.5, group=dist.group.WORLD, seed=3
        ).double()
        head.weight.data = weight[head.class_start : head.class_end].clone()
        size = emb.shape[0] // world
        local = emb[rank * size : (rank + 1) * size].clone().requires_grad_(True)
        state = head.negative_generator.get_state()
        loss = head(local, labels[rank * size : (rank + 1) * size], 30.0)
        loss.backward()
        head.negative_generator.set_state(state)  # the same draw again: which rows this rank sampled
        in_shard = (labels >= head.class_start) & (labels < head.class_end)
        index, _ = head._sample(torch.where(in_shard, labels - head.class_start, torch.full_like(labels, -1)))
        out[rank] = (loss.item(), local.grad.clone(), head.weight.grad.clone(), (index + head.class_start).tolist())
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_with_sampled_negatives() -> None:
    """Each rank samples its own shard; rows whose class lives on the other rank (label -1 there) still get the
    full loss: a softmax over the union of both ranks' samples."""
    torch.manual_seed(4)
    emb, weight = torch.randn(8, 6, dtype=torch.float64), torch.randn(20, 1, 6, dtype=torch.float64)
    labels = torch.tensor([0, 3, 3, 12, 15, 15, 19, 1])  # 3 positive classes per rank of 10; 5 rows sampled each
    out = mp.Manager().dict()
    mp.start_processes(
        _sampling_worker, args=(2, _free_port(), emb, labels, weight, out), nprocs=2, start_method="spawn"
    )
    used = sorted(out[0][3] + out[1][3])
    assert len(used) == 10 and set(labels.tolist()) <= set(used)
    assert any(c not in labels.tolist() for c in out[0][3]) and any(c not in labels.tolist() for c in out[1][3])
    e = emb.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    cos = F.normalize(e, dim=1) @ F.normalize(w[used, 0], dim=1).T
    targets = torch.tensor([used.index(c) for c in labels.tolist()])
    logits = cos - 0.35 * F.one_hot(targets, len(used)).double()
    reference = F.cross_entropy(logits * 30.0, targets)
    reference.backward()
    for rank in range(2):
        rank_loss, emb_grad, weight_grad, _ = out[rank]
        start, end = class_range(20, rank, 2)
        assert rank_loss == pytest.approx(reference.item(), rel=1e-12)
        torch.testing.assert_close(emb_grad / 2, e.grad[rank * 4 : (rank + 1) * 4])
        torch.testing.assert_close(weight_grad, w.grad[start:end])
