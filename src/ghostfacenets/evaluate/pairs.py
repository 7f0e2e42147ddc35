"""Verification pairs from identity folders (one sub-folder per person of aligned 112x112 crops)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.folders import IdentityFolder, scan_identity_folder
from ..data.images import ImageError, decode_image
from ..data.verification_bin import write_verification_bin
from ..errors import GhostFaceNetsError
from ..inference import load_embedder
from .distributed import array_job, embed_job
from .verification import PairSet, SetEvaluation

MAX_EXHAUSTIVE_PAIRS = 20_000_000  # about 100 bytes a pair while pairs are drawn and scored: 2 GB at the cap


def _within_identity_pairs(labels: np.ndarray) -> np.ndarray:
    """Every (i, j), i < j, of images of the same identity, shape (S, 2)."""
    parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        i, j = np.triu_indices(members.size, k=1)
        parts.append(np.stack([members[i], members[j]], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)


def _sample_different_pairs(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct (i, j), i < j, of different identities, uniformly among all such pairs."""
    n = labels.size
    chosen: dict[int, tuple[int, int]] = {}
    while len(chosen) < count:
        i = rng.integers(0, n, size=2 * (count - len(chosen)) + 16)
        j = rng.integers(0, n, size=i.size)
        for a, b in zip(np.minimum(i, j).tolist(), np.maximum(i, j).tolist()):
            if labels[a] != labels[b]:
                chosen.setdefault(a * n + b, (a, b))
                if len(chosen) == count:
                    break
    return np.array(list(chosen.values()), dtype=np.int64).reshape(-1, 2)


def make_pairs(labels: Any, num_pairs: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (P, 2) of image indices, issame (P,)) in a seeded random order.

    ``num_pairs`` None: every pair of images (exhaustive). Otherwise half same-identity and half different-identity
    pairs (same gets the odd one), drawn without replacement; each half is capped by the pairs that exist.
    The order is shuffled so that contiguous folds mix same and different pairs.
    """
    labels = np.asarray(labels).reshape(-1)
    n = labels.size
    rng = np.random.default_rng(seed)
    total = n * (n - 1) // 2
    if total == 0:
        raise GhostFaceNetsError("at least two images are needed to make pairs")
    same = _within_identity_pairs(labels)
    n_diff_available = total - len(same)
    if num_pairs is None:
        if total > MAX_EXHAUSTIVE_PAIRS:
            raise GhostFaceNetsError(
                f"{n} images make {total:,} pairs, more than the {MAX_EXHAUSTIVE_PAIRS:,} "
                "evaluated exhaustively; sample some with a pair count instead (--pairs N)"
            )
        i, j = np.triu_indices(n, k=1)
        pairs = np.stack([i, j], axis=1)
    else:
        if num_pairs < 2:
            raise GhostFaceNetsError(f"ask for at least 2 pairs, got {num_pairs}")
        n_same = min((num_pairs + 1) // 2, len(same))
        n_diff = min(num_pairs // 2, n_diff_available)
        same = same[np.sort(rng.choice(len(same), size=n_same, replace=False))] if n_same else same[:0]
        if n_diff_available <= 4 * n_diff:  # few different pairs: enumerate them
            i, j = np.triu_indices(n, k=1)
            keep = labels[i] != labels[j]
            diff = np.stack([i[keep], j[keep]], axis=1)
            diff = diff[np.sort(rng.choice(len(diff), size=n_diff, replace=False))]
        else:
            diff = _sample_different_pairs(labels, n_diff, rng)
        pairs = np.concatenate([same, diff])
    pairs = pairs[rng.permutation(len(pairs))]
    return pairs.astype(np.int64), labels[pairs[:, 0]] == labels[pairs[:, 1]]


def folder_crops(folder: IdentityFolder, size: int | None, what: str) -> Iterator[tuple[bytes, np.ndarray]]:
    """(file bytes, decoded RGB image) of each image of the folder, one at a time; images that are not ``size`` x
    ``size`` (when given) or differ in size from the first are refused. ``what``: the purpose, for messages."""
    first_shape = None
    for path in folder.paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
        image = decode_image(data, str(path))
        if size is not None and image.shape[:2] != (size, size):
            raise ImageError(
                f"{path}: {image.shape[1]}x{image.shape[0]} pixels; {what} hold aligned {size}x{size} "
                "crops (align the faces first)"
            )
        first_shape = first_shape or image.shape
        if image.shape != first_shape:
            raise ImageError(f"{folder.root}: crops of different sizes {sorted({first_shape, image.shape})}")
        yield data, image


def read_folder_set(root: str | Path, num_pairs: int | None = None, seed: int = 0, size: int | None = None) -> PairSet:
    """An identity folder as a :class:`PairSet`: every crop read (``size`` x ``size`` when given), pairs from
    :func:`make_pairs`."""
    folder = scan_identity_folder(root)
    pairs, issame = make_pairs(folder.labels, num_pairs, seed)
    images = np.stack([image for _, image in folder_crops(folder, size, "identity folders for evaluation")])
    name = Path(root).resolve().name
    return PairSet(name, array_job(name, images), pairs, issame)


def evaluate_folder(
    model_or_embedder: Any,
    root: str | Path,
    num_pairs: int | None = None,
    seed: int = 0,
    flip: bool = True,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> SetEvaluation:
    """Verification metrics of an identity folder: every image embedded once, pairs from :func:`make_pairs`."""
    embedder = load_embedder(model_or_embedder, device)
    pair_set = read_folder_set(root, num_pairs, seed, None if embedder.input_size is None else embedder.input_size[0])
    return pair_set.evaluate(embed_job(embedder, pair_set.job, flip, batch_size, progress), flip)


def make_bin(
    root: str | Path, output: str | Path, num_pairs: int | None = None, seed: int = 0, size: int | None = 112
) -> tuple[Path, int, int]:
    """Write a ``.bin`` of pairs from an identity folder; images are stored as their original encoded bytes.

    Returns (path, pairs, same pairs). ``size``: the crop size every image must have (None: any, but one size).
    """
    folder = scan_identity_folder(root)
    pairs, issame = make_pairs(folder.labels, num_pairs, seed)
    data = [blob for blob, _ in folder_crops(folder, size, "verification .bin files")]  # checked, stored as they are
    images = [data[i] for i in pairs.reshape(-1)]
    path = write_verification_bin(output, images, issame)
    return path, len(issame), int(issame.sum())
