"""Embedding a set of face crops in one process or sharded over many (``torchrun``: GPUs or CPU processes).

Every evaluation describes what it embeds as an :class:`ImageJob` (how many crops, how to load any of them) and
gets the embeddings from :func:`embed_job`. Crops are loaded in threads while batches embed. Under ``torchrun`` each
process embeds one contiguous shard of the crops and the shards are gathered on rank 0 in rank order, a block of
rows at a time; rank 0 then holds exactly what one process would have computed, and the other ranks get ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from ..data.images import ImageError, load_image
from ..errors import GhostFaceNetsError
from ..inference import Embedder

GATHER_CHUNK_ELEMENTS = 1 << 24  # float32 values each rank sends per gather call: 64 MiB, so rank 0 holds W x 64 MiB


@dataclass(frozen=True)
class ImageJob:
    """``count`` face crops to embed; ``load(indices)`` returns crops ``indices`` (sorted) as uint8 RGB
    (n, H, W, 3). ``name`` labels the progress bar."""

    name: str
    count: int
    load: Callable[[np.ndarray], np.ndarray]


class Processes(Protocol):
    """Who this process is among several (what ``ghostfacenets.train.distributed.DistributedContext`` offers)."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    @property
    def group(self) -> dist.ProcessGroup | None: ...


def array_job(name: str, images: np.ndarray) -> ImageJob:
    """A job over crops already in memory (N, H, W, 3)."""
    return ImageJob(name, len(images), lambda indices: images[indices])


def stack_crops(crops: Sequence[np.ndarray], names: Sequence[str | Path]) -> np.ndarray:
    """Crops of one size as one uint8 array (n, H, W, 3); a crop of another size is refused with its name."""
    first = crops[0].shape
    for crop, name in zip(crops, names):
        if crop.shape != first:
            raise ImageError(
                f"{name}: {crop.shape[1]}x{crop.shape[0]} pixels where the other crops are {first[1]}x{first[0]}: "
                "evaluation needs aligned crops of one size (align the faces first)"
            )
    return np.stack(crops)


def file_job(name: str, paths: Sequence[Path]) -> ImageJob:
    """A job over image files that hold aligned crops (decoded as RGB when loaded)."""
    return ImageJob(
        name,
        len(paths),
        lambda indices: stack_crops([load_image(paths[i]) for i in indices], [paths[i] for i in indices]),
    )


def shard(count: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(count)`` that process ``rank`` of ``world_size`` embeds (the first
    ``count % world_size`` blocks one larger)."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def _check_size(embedder: Embedder, crops: np.ndarray, job: ImageJob) -> None:
    if embedder.input_size is not None and tuple(crops.shape[1:3]) != tuple(embedder.input_size):
        h, w = embedder.input_size
        raise GhostFaceNetsError(
            f"{job.name}: crops are {crops.shape[1]}x{crops.shape[2]} (HxW) but {embedder.name} needs {h}x{w}: "
            "align the faces to the ArcFace template first"
        )


def _embed_indices(
    embedder: Embedder,
    job: ImageJob,
    indices: range,
    flip: bool,
    batch_size: int,
    workers: int,
    on_batch: Callable[[int], None],
) -> np.ndarray:
    """Embeddings (len(indices), D) of crops ``indices`` of the job, written batch by batch into one array (no
    second copy of a million embeddings); up to ``workers`` batches load ahead in threads."""
    starts = list(range(indices.start, indices.stop, batch_size))
    out = np.zeros((0, embedder.embedding_size or 0), np.float32)

    def load(start: int) -> np.ndarray:
        crops = job.load(np.arange(start, min(start + batch_size, indices.stop)))
        _check_size(embedder, crops, job)
        return crops

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[Future] = [pool.submit(load, s) for s in starts[:workers]]
        for k, start in enumerate(starts):
            crops = pending.pop(0).result()
            if k + workers < len(starts):
                pending.append(pool.submit(load, starts[k + workers]))
            embeddings = np.asarray(embedder.embed_batch(crops, flip), dtype=np.float32).reshape(len(crops), -1)
            if k == 0:
                out = np.empty((len(indices), embeddings.shape[1]), np.float32)
            out[start - indices.start : start - indices.start + len(crops)] = embeddings
            on_batch(len(crops))
    return out


def _gather_rows(local: np.ndarray, count: int, processes: Processes) -> np.ndarray | None:
    """Every rank's shard (``shard(count, rank, world)`` rows) concatenated on rank 0, ``GATHER_CHUNK_ELEMENTS`` per
    rank per call; None on the other ranks."""
    group, world, rank = processes.group, processes.world_size, processes.rank
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else None
    width = torch.tensor([local.shape[1] if local.ndim == 2 else 0], device=device)
    dist.all_reduce(width, op=dist.ReduceOp.MAX, group=group)  # a rank with an empty shard learns D too
    dim = int(width.item())
    blocks = [shard(count, r, world) for r in range(world)]
    rows = max(1, GATHER_CHUNK_ELEMENTS // max(dim, 1))
    out = np.empty((count, dim), np.float32) if rank == 0 else None
    for offset in range(0, max(len(b) for b in blocks), rows):
        piece = torch.zeros((rows, dim), dtype=torch.float32)
        mine = local[offset : offset + rows]
        if len(mine):
            piece[: len(mine)] = torch.from_numpy(mine)
        piece = piece.to(device) if device is not None else piece
        received = [torch.empty_like(piece) for _ in range(world)] if rank == 0 else None
        dist.gather(piece, received, dst=0, group=group)
        if out is not None and received is not None:
            for block, values in zip(blocks, received):
                n = max(0, min(rows, len(block) - offset))
                out[block.start + offset : block.start + offset + n] = values[:n].cpu().numpy()
    return out


def embed_job(
    embedder: Embedder,
    job: ImageJob,
    flip: bool = True,
    batch_size: int = 128,
    progress: bool = True,
    workers: int = 4,
) -> np.ndarray:
    """Embeddings float32 (``job.count``, D) of every crop of the job, in order, in this process (with ``flip``:
    emb(x) + emb(flip_lr(x)), not normalised)."""
    result = embed_job_sharded(embedder, job, None, flip, batch_size, progress, workers)
    assert result is not None  # one process holds every row
    return result


def embed_job_sharded(
    embedder: Embedder,
    job: ImageJob,
    processes: Processes | None,
    flip: bool = True,
    batch_size: int = 128,
    progress: bool = True,
    workers: int = 4,
) -> np.ndarray | None:
    """:func:`embed_job` over the ranks of ``processes`` (None or one rank: this process alone): each rank embeds
    its :func:`shard` and rank 0 receives every row, in order; the other ranks return None. The progress bar (rank
    0 only) counts rank 0's crops times the number of processes."""
    from tqdm import tqdm

    if batch_size < 1:
        raise GhostFaceNetsError(f"the batch size must be positive, got {batch_size}")
    world = processes.world_size if processes is not None and processes.group is not None else 1
    rank = processes.rank if processes is not None and world > 1 else 0
    indices = shard(job.count, rank, world)
    with tqdm(total=job.count, desc=job.name, unit="img", disable=not progress or rank != 0, leave=False) as bar:

        def advance(n: int) -> None:
            bar.update(min(n * world, bar.total - bar.n))

        local = _embed_indices(embedder, job, indices, flip, batch_size, workers, advance)
    if world == 1 or processes is None:
        return local
    return _gather_rows(local, job.count, processes)
