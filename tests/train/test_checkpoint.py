"""Checkpoint folders: atomic completion, pruning, and class centres re-assembled for any number of ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ghostfacenets.losses import class_range
from ghostfacenets.train.checkpoint import (
    CentreShard,
    CheckpointError,
    find_checkpoint,
    list_checkpoints,
    load_centre_shard,
    load_trainer_state,
    save_checkpoint,
)
from ghostfacenets.train.distributed import DistributedContext


def _save(output: Path, step: int, keep: int = 2) -> Path:
    shard = CentreShard(0, 5, torch.full((5, 1, 3), float(step)), torch.ones(5, 1, 3))
    return save_checkpoint(DistributedContext(), output, step, {"step": step}, shard, {"torch": None}, keep)


def test_latest_checkpoint_and_pruning(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _save(tmp_path, step)
    (tmp_path / "checkpoints" / ".step-000000040.partial").mkdir()  # a save that never finished
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-000000020", "step-000000030"]
    latest = find_checkpoint(tmp_path, "auto")
    assert latest is not None and latest.name == "step-000000030"
    assert load_trainer_state(latest)["step"] == 30 and load_trainer_state(latest)["world_size"] == 1
    assert find_checkpoint(tmp_path, "none") is None
    assert find_checkpoint(tmp_path / "empty", "auto") is None
    assert find_checkpoint(tmp_path, str(latest)) == latest
    with pytest.raises(CheckpointError):
        find_checkpoint(tmp_path, str(tmp_path / "elsewhere"))


def test_saving_below_later_checkpoints_replaces_them(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _save(tmp_path, step, keep=3)
    _save(tmp_path, 15, keep=3)  # resumed from step 10: 20 and 30 belong to the abandoned continuation
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-000000010", "step-000000015"]
    assert find_checkpoint(tmp_path, "auto").name == "step-000000015"


def _write_shards(path: Path, classes: int, world: int, full: torch.Tensor, momentum: torch.Tensor) -> None:
    for rank in range(world):
        start, end = class_range(classes, rank, world)
        torch.save(
            {"start": start, "end": end, "weight": full[start:end], "momentum": momentum[start:end], "rng": {}},
            path / f"centres-{rank:05d}.pt",
        )


@pytest.mark.parametrize("saved,loaded", [(3, 2), (2, 3), (1, 4), (4, 1)])
def test_centres_are_resharded(tmp_path: Path, saved: int, loaded: int) -> None:
    full, momentum = torch.randn(11, 2, 4), torch.randn(11, 2, 4)
    _write_shards(tmp_path, 11, saved, full, momentum)
    for rank in range(loaded):
        start, end = class_range(11, rank, loaded)
        shard = load_centre_shard(tmp_path, start, end, saved)
        assert torch.equal(shard.weight, full[start:end]) and torch.equal(shard.momentum, momentum[start:end])


def test_missing_shard_is_an_error(tmp_path: Path) -> None:
    _write_shards(tmp_path, 10, 2, torch.zeros(10, 1, 2), torch.zeros(10, 1, 2))
    (tmp_path / "centres-00001.pt").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_centre_shard(tmp_path, 0, 10, 2)
