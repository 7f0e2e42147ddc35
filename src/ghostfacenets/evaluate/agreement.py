"""What a converted model (float16, int8, another runtime) changes against its reference: cosine agreement of the raw
embeddings, verification accuracy on ``.bin`` sets, and batch-1 latency. Every export format reports with this."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.transforms import INPUT_SIZE
from ..inference import Embedder, embed_images, load_embedder
from .verification import evaluate_bin

_COMPARED = ("best_threshold_accuracy", "accuracy_10fold_mean")


@dataclass(frozen=True)
class Agreement:
    """Cosine similarity between the embeddings of a reference and a candidate model over the same faces."""

    faces: int
    mean: float
    min: float
    p01: float  # 1st percentile

    def to_dict(self) -> dict[str, float | int]:
        return {"faces": self.faces, "cosine_mean": self.mean, "cosine_min": self.min, "cosine_p01": self.p01}


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Per-face cosine similarity of two embedding sets (N, D) -> summary."""
    if reference.shape != candidate.shape or reference.ndim != 2 or len(reference) == 0:
        raise ValueError(f"embeddings must be two equal (N, D) arrays, got {reference.shape} and {candidate.shape}")
    a = reference.astype(np.float64)
    b = candidate.astype(np.float64)
    denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.sum(a * b, axis=1) / np.where(denominator > 0, denominator, 1.0)
    return Agreement(len(cosine), float(cosine.mean()), float(cosine.min()), float(np.percentile(cosine, 1)))


def batch1_latency_ms(embedders: Sequence[Embedder], repeats: int = 30, block: int = 5) -> list[float]:
    """Median batch-1 latency in ms of each embedder on one crop (no flip); the embedders take turns in blocks of
    ``block`` runs, each after one untimed run, so that they share the machine's load (a quick check; the scripts
    under bench/ measure properly)."""
    crops = []
    for embedder in embedders:
        height, width = embedder.input_size or (INPUT_SIZE, INPUT_SIZE)
        crops.append(np.zeros((1, height, width, 3), np.uint8))
    times: list[list[float]] = [[] for _ in embedders]
    while len(times[-1]) < repeats:
        for embedder, crop, record in zip(embedders, crops, times, strict=True):
            embedder.embed_batch(crop, False)  # the other runtime's threads may still be spinning
            for _ in range(min(block, repeats - len(record))):
                start = time.perf_counter()
                embedder.embed_batch(crop, False)
                record.append(time.perf_counter() - start)
    return [float(np.median(t) * 1000) for t in times]


def compare_embedders(
    reference: Any,
    candidate: Any,
    faces: np.ndarray,
    bins: Sequence[str | Path] = (),
    flip: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """What ``candidate`` changes against ``reference`` (each anything :func:`ghostfacenets.inference.load_embedder`
    accepts, e.g. two ONNX paths): cosine agreement of the raw embeddings over ``faces`` (uint8 RGB crops),
    verification metrics on each ``.bin`` with the accuracy change in points, and the batch-1 latency of both."""
    reference_embedder, candidate_embedder = load_embedder(reference), load_embedder(candidate)
    result: dict[str, Any] = {
        "reference": reference_embedder.name,
        "candidate": candidate_embedder.name,
        "agreement": agreement(
            embed_images(reference_embedder, faces, flip=False, progress=False),
            embed_images(candidate_embedder, faces, flip=False, progress=False),
        ).to_dict(),
        "verification": [],
    }
    for bin_path in bins:
        before = evaluate_bin(reference_embedder, bin_path, flip=flip, progress=progress)
        after = evaluate_bin(candidate_embedder, bin_path, flip=flip, progress=progress)
        result["verification"].append(
            {
                "set": Path(bin_path).stem,
                "pairs": before["pairs"],
                "reference": {k: before[k] for k in _COMPARED},
                "candidate": {k: after[k] for k in _COMPARED},
                "change_points": {
                    k: None if after[k] is None or before[k] is None else 100.0 * (after[k] - before[k])
                    for k in _COMPARED
                },
            }
        )
    reference_ms, candidate_ms = batch1_latency_ms([reference_embedder, candidate_embedder])
    result["batch1_latency_ms"] = {
        "reference": reference_ms,
        "candidate": candidate_ms,
        "speedup": reference_ms / candidate_ms,
    }
    return result
