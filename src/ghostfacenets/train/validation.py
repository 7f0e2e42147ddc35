"""The validation sets of a training run: ``.bin`` files as they are, identity folders turned into seeded pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.datasets import FolderSource
from ..data.images import ResizeMode
from ..errors import GhostFaceNetsError
from ..files import VERSION_KEY, read_json, written_by
from .config import TrainConfig
from .distributed import DistributedContext


def prepare_validation(config: TrainConfig, output: Path, context: DistributedContext) -> list[Path]:
    """``.bin`` files to validate on; identity folders are turned into a ``.bin`` of seeded pairs under
    ``output/val`` (by rank 0; kept while ``val_identities``, ``val_pairs``, the size and resize mode stay the same,
    as ``<name>.json`` beside it records). Checks ``train.best_metric`` against the set names first, on every rank."""
    from ..files import atomic_write

    entries = [Path(entry) for entry in config.data.val]
    for path in entries:
        if not (path.is_file() or path.is_dir()):
            raise GhostFaceNetsError(f"data.val: {path} is neither a .bin file nor an identity folder")
    names = [path.stem if path.is_file() else path.name for path in entries]  # the keys of the results
    if len(set(names)) < len(names):
        raise GhostFaceNetsError(f"data.val: two validation sets have the same name ({', '.join(names)})")
    metric = config.train.best_metric
    if names and metric != "mean" and metric not in names:
        raise GhostFaceNetsError(
            f"train.best_metric {metric!r} is neither a validation set ({', '.join(names)}) nor 'mean'"
        )
    paths = []
    for path in entries:
        if path.is_file():
            paths.append(path)
            continue
        target = output / "val" / f"{path.name}.bin"
        data = config.data
        made_with = {
            "folder": str(path.resolve()),
            "identities": data.val_identities,
            "pairs": data.val_pairs,
            "size": config.model.input_size,
            "resize": data.resize,
            "seed": 0,
        }
        record = target.with_suffix(".json")
        written = read_json(record)
        if isinstance(written, dict):
            written.pop(VERSION_KEY, None)  # the pairs do not depend on the version that wrote them
        if context.is_main and not (target.exists() and written == made_with):
            write_pairs_bin(
                path, target, data.val_identities, data.val_pairs, config.model.input_size, data.resize
            )  # pairs of seed 0 whatever train.seed: comparable runs
            with atomic_write(record, "w") as f:
                json.dump({**made_with, **written_by()}, f)
        paths.append(target)
    context.barrier()
    return paths


def write_pairs_bin(
    folder: str | Path,
    target: str | Path,
    identities: list[str] | None,
    pairs: int | None,
    size: int,
    resize: ResizeMode,
    seed: int = 0,
) -> tuple[int, int]:
    """A verification ``.bin`` of pairs of an identity folder's images (fitted to ``size``); (pairs, same pairs)."""
    from ..data.verification_bin import write_verification_bin
    from ..evaluate.pairs import make_pairs

    source = FolderSource(folder, identities, size, resize)
    images = [source.load(i)[0] for i in range(len(source))]
    index, issame = make_pairs(np.asarray(source.labels), pairs, seed)
    write_verification_bin(target, [images[i] for i in index.reshape(-1)], issame)
    return len(issame), int(np.sum(issame))
