"""Atomic, resumable training checkpoints whose class centres can be re-sharded over a different number of ranks.

A checkpoint is a folder ``checkpoints/step-<N>/`` holding ``trainer.pt`` (written by rank 0: model, backbone
optimiser, loss scaler, step, epoch, best validation value, config) and one ``centres-<rank>.pt`` per rank (the
rank's rows of the class centres and of their momentum, and the rank's random-number states); both record the
package version that wrote them (``ghostfacenets_version``). The folder is
filled under a temporary name and renamed when every file is complete; the newest is the one with the highest step.
Saving step N removes the checkpoints above N (left by a run resumed from an earlier checkpoint) and keeps the
newest ``keep`` up to N. Multi-node runs need ``output`` on a file system every node sees.

Everything is read with ``torch.load(weights_only=True)``: tensors and plain Python values only.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import GhostFaceNetsError
from ..files import atomic_path, written_by
from .distributed import DistributedContext

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(GhostFaceNetsError):
    """A checkpoint that cannot be resumed from."""


@dataclass
class CentreShard:
    """One rank's class-centre rows ``[start, end)`` with their momentum (None before the first step)."""

    start: int
    end: int
    weight: torch.Tensor
    momentum: torch.Tensor | None


def checkpoint_root(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def _save_tensor_file(obj: dict[str, Any], path: Path) -> None:
    """``obj`` and the package version, atomically."""
    with atomic_path(path) as tmp:
        torch.save({**obj, **written_by()}, tmp)


def save_checkpoint(
    context: DistributedContext,
    output: str | Path,
    step: int,
    trainer_state: dict[str, Any],
    shard: CentreShard,
    rng_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Collective: every rank calls it. Returns the finished checkpoint folder."""
    root = checkpoint_root(output)
    final = root / f"step-{step:09d}"
    partial = root / f".step-{step:09d}.partial"
    if context.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    context.barrier()
    _save_tensor_file(
        {
            "start": shard.start,
            "end": shard.end,
            "weight": shard.weight.detach().cpu(),
            "momentum": None if shard.momentum is None else shard.momentum.detach().cpu(),
            "rng": rng_state,
        },
        partial / f"centres-{context.rank:05d}.pt",
    )
    context.barrier()
    if context.is_main:
        _save_tensor_file(
            {**trainer_state, "format_version": FORMAT_VERSION, "world_size": context.world_size},
            partial / "trainer.pt",
        )
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        found = list_checkpoints(root)
        later = [p for p in found if checkpoint_step(p) > step]
        earlier = [p for p in found if checkpoint_step(p) <= step]
        for old in later + (earlier[:-keep] if keep > 0 else []):
            shutil.rmtree(old, ignore_errors=True)
    context.barrier()
    return final


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder ``step-<N>``."""
    return int(path.name.removeprefix("step-"))


def list_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)), key=checkpoint_step)


def find_checkpoint(output: str | Path, resume: str) -> Path | None:
    """``auto``: the newest finished checkpoint under ``output`` (None if there is none); ``none``: None; else the
    given checkpoint folder (or a run folder, whose newest checkpoint is used)."""
    if resume == "none":
        return None
    if resume == "auto":
        found = list_checkpoints(checkpoint_root(output))
        return found[-1] if found else None
    path = Path(resume)
    if (path / "trainer.pt").is_file():
        return path
    found = list_checkpoints(checkpoint_root(path))
    if found:
        return found[-1]
    raise CheckpointError(f"{path}: not a checkpoint folder (with trainer.pt) nor a run folder with checkpoints")


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete") from None
    except Exception as exc:  # torch raises several error types for damaged or foreign files
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({exc})") from None


def load_trainer_state(path: Path) -> dict[str, Any]:
    state = _load(path / "trainer.pt")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer ghostfacenets (format {state.get('format_version')})")
    return state


def load_centre_shard(path: Path, start: int, end: int, saved_world_size: int) -> CentreShard:
    """Rows ``[start, end)`` of the class centres and their momentum, assembled from the saved shards of any
    number of ranks."""
    weights, momenta = [], []
    covered = start
    for rank in range(saved_world_size):
        piece = _load(path / f"centres-{rank:05d}.pt")
        lo, hi = max(start, piece["start"]), min(end, piece["end"])
        if lo >= hi:
            continue
        if lo != covered:
            raise CheckpointError(f"{path}: class centres {covered}..{lo} are missing")
        rows = slice(lo - piece["start"], hi - piece["start"])
        weights.append(piece["weight"][rows])
        momenta.append(None if piece["momentum"] is None else piece["momentum"][rows])
        covered = hi
    if covered != end:
        raise CheckpointError(f"{path}: class centres {covered}..{end} are missing")
    present = [m for m in momenta if m is not None]
    momentum = torch.cat(present) if len(present) == len(momenta) else None
    return CentreShard(start, end, torch.cat(weights), momentum)


def load_rng_state(path: Path, rank: int) -> dict[str, Any]:
    return _load(path / f"centres-{rank:05d}.pt")["rng"]
