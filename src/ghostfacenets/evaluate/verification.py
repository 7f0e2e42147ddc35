"""1:1 verification on insightface ``.bin`` sets (LFW, CFP-FP, AgeDB-30, ...) and on labelled image pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.verification_bin import decode_images, read_verification_bin
from ..errors import GhostFaceNetsError
from ..inference import load_embedder
from .distributed import ImageJob, array_job, embed_job
from .metrics import metrics_of_scores, pair_scores

PAPER_BIN_SETS = ("lfw", "cfp_ff", "cfp_fp", "calfw", "cplfw", "agedb_30", "vgg2_fp")  # the paper's 1:1 tables


def bin_files(folder: str | Path) -> list[Path]:
    """The ``.bin`` files of a folder (insightface's ``faces_emore`` layout): the paper's sets in the paper's order
    (LFW, CFP-FF, CFP-FP, CALFW, CPLFW, AgeDB-30, VGG2-FP), then any others by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GhostFaceNetsError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".bin")
    if not files:
        raise GhostFaceNetsError(f"{folder}: no .bin files (insightface's faces_emore layout: lfw.bin, cfp_fp.bin)")
    rank = {name: i for i, name in enumerate(PAPER_BIN_SETS)}
    return sorted(files, key=lambda p: (rank.get(p.stem.lower(), len(rank)), p.name))


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


@dataclass(frozen=True)
class PairSet:
    """Labelled pairs ready to embed: the crops (``job``), pairs (P, 2) of crop indices and their labels (P,)."""

    name: str
    job: ImageJob
    pairs: np.ndarray
    issame: np.ndarray

    def evaluate(self, embeddings: np.ndarray, flip: bool, fold_ids: Any = None) -> SetEvaluation:
        """The metrics of the pairs from the embeddings of the job's crops."""
        return evaluate_embedded_pairs(self.name, embeddings, self.pairs, self.issame, flip, fold_ids)


def read_bin_set(path: str | Path) -> PairSet:
    """A ``.bin`` set as a :class:`PairSet`: each distinct image of the file is decoded once (and embedded once)."""
    path = Path(path)
    encoded, issame = read_verification_bin(path)
    first_index: dict[bytes, int] = {}
    rows = np.array([first_index.setdefault(data, len(first_index)) for data in encoded], dtype=np.int64)
    images = decode_images(list(first_index), str(path))
    return PairSet(path.stem, array_job(path.stem, images), rows.reshape(-1, 2), np.asarray(issame, dtype=bool))


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
    embedder = load_embedder(model_or_embedder, device)
    pair_set = read_bin_set(path)
    embeddings = embed_job(embedder, pair_set.job, flip, batch_size, progress)
    return embeddings, pair_set.pairs, pair_set.issame


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
