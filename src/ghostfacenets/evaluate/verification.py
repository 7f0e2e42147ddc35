"""1:1 verification on insightface ``.bin`` sets (LFW, CFP-FP, AgeDB-30, ...) and on labelled image pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.verification_bin import decode_images, read_verification_bin
from ..inference import embed_images, load_embedder
from .metrics import metrics_of_scores, pair_scores


@dataclass(frozen=True)
class SetEvaluation:
    """The metrics of one verification set with the pair scores behind them (for ROC figures)."""

    name: str
    metrics: dict[str, Any]
    scores: np.ndarray
    issame: np.ndarray


def evaluate_embedded_pairs(
    name: str,
    embeddings: np.ndarray,
    pairs: np.ndarray,
    issame: np.ndarray,
    flip: bool,
    fold_ids: Any = None,
) -> SetEvaluation:
    """Metrics of pairs (P, 2) of row indices into ``embeddings`` (N, D), without building (P, D) pair arrays."""
    scores, distances = pair_scores(embeddings, pairs)
    metrics = metrics_of_scores(scores, distances, issame, fold_ids) | {"flip": flip}
    return SetEvaluation(name, metrics, scores, np.asarray(issame, dtype=bool))


def embed_bin(
    model_or_embedder: Any,
    path: str | Path,
    flip: bool = True,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw embeddings (N, D) of the distinct images, pairs (P, 2) of row indices into them, labels (P,)) of a
    ``.bin`` set; each distinct image of the file is decoded and embedded once."""
    path = Path(path)
    embedder = load_embedder(model_or_embedder, device)
    encoded, issame = read_verification_bin(path)
    first_index: dict[bytes, int] = {}
    rows = np.array([first_index.setdefault(data, len(first_index)) for data in encoded], dtype=np.int64)
    images = decode_images(list(first_index), str(path))
    embeddings = embed_images(embedder, images, batch_size=batch_size, flip=flip, progress=progress)
    return embeddings, rows.reshape(-1, 2), np.asarray(issame, dtype=bool)


def evaluate_bin_detailed(
    model_or_embedder: Any,
    path: str | Path,
    flip: bool = True,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
    fold_ids: Any = None,
) -> SetEvaluation:
    """:func:`evaluate_bin` with the pair scores."""
    embeddings, pairs, issame = embed_bin(model_or_embedder, path, flip, batch_size, device, progress)
    return evaluate_embedded_pairs(Path(path).stem, embeddings, pairs, issame, flip, fold_ids)


def evaluate_bin(
    model_or_embedder: Any,
    path: str | Path,
    flip: bool = True,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Verification metrics of one ``.bin`` set (the JSON object of ``ghostfacenets evaluate``, with ``flip``).

    ``model_or_embedder``: anything :func:`ghostfacenets.inference.load_embedder` accepts (a model, a file,
    a pretrained name, an ``.onnx`` path).
    """
    return evaluate_bin_detailed(model_or_embedder, path, flip, batch_size, device, progress).metrics
