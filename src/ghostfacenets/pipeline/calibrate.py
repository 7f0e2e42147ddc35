"""Calibrating decision thresholds: the cosine threshold at a target false-accept rate on the user's labelled pairs.

Pairs come from a text file (two image paths and a same/different label per line; photos are detected and aligned)
or from an insightface verification ``.bin`` (already aligned 112x112 crops). The thresholds, with the FAR, the
set's name and its pair counts, can be written into a model file's metadata, where ``FaceRecognizer`` finds them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..data.pairs import PairsFileError, read_labelled_pairs
from ..errors import GhostFaceNetsError
from ..files import written_by
from .recognizer import FaceRecognizer

DECISION_RULE = "same person if cosine similarity > threshold"


class CalibrationError(GhostFaceNetsError):
    """Pairs or options that cannot give a threshold."""


def read_pairs_file(path: str | Path, root: str | Path | None = None) -> list[tuple[Path, Path, bool]]:
    """Labelled pairs from a text file (:func:`ghostfacenets.data.pairs.read_labelled_pairs`): per line two image
    paths and a label (1/0, yes/no, true/false, same/different), separated by commas, tabs or spaces; an optional
    header; ``#`` comments. Relative paths are taken from ``root`` (default: the file's folder)."""
    try:
        pairs = read_labelled_pairs(path, root)
    except PairsFileError as exc:
        raise CalibrationError(str(exc)) from None
    return list(zip(pairs.images_a, pairs.images_b, pairs.issame.tolist()))


def score_photo_pairs(
    recognizer: FaceRecognizer,
    pairs: Sequence[tuple[Path, Path, bool]],
    skip_unusable: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(cosine scores, labels, problems): each distinct photo is detected, aligned and embedded once. With
    ``skip_unusable`` pairs with an image that cannot be used (no face, unreadable) are dropped and listed in
    ``problems``; otherwise the first such image raises."""
    from tqdm import tqdm

    embeddings: dict[Path, np.ndarray] = {}
    problems: dict[Path, str] = {}
    images = list(dict.fromkeys(p for a, b, _ in pairs for p in (a, b)))
    for image in tqdm(images, desc="embedding photos", unit="img", disable=not progress, leave=False):
        try:
            embeddings[image] = recognizer.embed(image, aligned=False)
        except GhostFaceNetsError as exc:  # no face, unreadable, not an image
            if not skip_unusable:
                raise CalibrationError(f"{exc} (use --skip-unusable to leave out such pairs)") from None
            problems[image] = str(exc)
    scores, labels = [], []
    for a, b, same in pairs:
        if a in embeddings and b in embeddings:
            scores.append(float(np.dot(embeddings[a], embeddings[b])))
            labels.append(same)
    return np.array(scores, dtype=np.float64), np.array(labels, dtype=bool), list(problems.values())


def score_bin(recognizer: FaceRecognizer, path: str | Path, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(cosine scores, labels) of an insightface verification ``.bin`` (aligned crops; no detection), scored as
    ``evaluate`` scores it (each distinct image embedded once)."""
    from ..evaluate.metrics import pair_scores
    from ..evaluate.verification import embed_bin

    embeddings, pairs, issame = embed_bin(
        recognizer.embedder, path, recognizer.flip, recognizer.batch_size, progress=progress
    )
    return pair_scores(embeddings, pairs)[0], issame


def thresholds_at(scores: np.ndarray, issame: np.ndarray, fars: Sequence[float]) -> list[dict[str, Any]]:
    """For each target FAR: the threshold (lowest one whose FAR on these pairs is at most the target), the FRR
    there, and whether the set has enough different pairs (at least 1/FAR) for the FAR to be measured."""
    from ..evaluate.metrics import threshold_at_far

    n_diff = int((~issame).sum())
    records = []
    for far in sorted(set(fars), reverse=True):
        if not 0 < far < 1:
            raise CalibrationError(f"a target FAR lies strictly between 0 and 1, got {far:g}")
        threshold, frr = threshold_at_far(scores, issame, far)
        false_accepts = int(np.sum(scores[~issame] > threshold))
        records.append(
            {
                "far": far,
                "threshold": float(threshold),  # not rounded: rounding down would accept more different pairs
                "frr": round(frr, 6),
                "measured_far": round(false_accepts / n_diff, 6) if n_diff else None,
                "estimable": n_diff * far >= 1 - 1e-9,
            }
        )
    return records


def calibrate(
    recognizer: FaceRecognizer,
    source: str | Path,
    fars: Sequence[float] = (1e-2, 1e-3),
    *,
    set_name: str | None = None,
    root: str | Path | None = None,
    skip_unusable: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Calibrate thresholds at ``fars`` on a pairs file or a ``.bin``; returns a JSON-ready report."""
    source = Path(source)
    if not source.is_file():
        raise CalibrationError(f"{source}: no such file")
    problems: list[str] = []
    if source.suffix.lower() == ".bin":
        scores, issame = score_bin(recognizer, source, progress)
        detector = "none (aligned crops)"
    else:
        pairs = read_pairs_file(source, root)
        scores, issame, problems = score_photo_pairs(recognizer, pairs, skip_unusable, progress)
        detector = recognizer.detector.name
    n_same, n_diff = int(issame.sum()), int((~issame).sum())
    if n_same == 0 or n_diff == 0:
        raise CalibrationError(
            f"{source}: calibration needs both same and different pairs; found {n_same} same "
            f"and {n_diff} different usable pairs"
        )
    return {
        "set": set_name or source.stem,
        "pairs": int(issame.size),
        "same_pairs": n_same,
        "different_pairs": n_diff,
        "unusable_images": problems,
        "lowest_measurable_far": 1.0 / n_diff,
        "model": recognizer.model_id.name,
        "flip": recognizer.flip,
        "detector": detector,
        "rule": DECISION_RULE,
        "thresholds": thresholds_at(scores, issame, fars),
        **written_by(),
    }


def metadata_thresholds(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of a calibration report that go into model metadata (only FARs the set could measure)."""
    date = datetime.now(timezone.utc).date().isoformat()
    common = {k: report[k] for k in ("set", "pairs", "same_pairs", "different_pairs", "flip", "detector", "rule")}
    return [
        {"far": t["far"], "threshold": t["threshold"], "frr": t["frr"], **common, "metric": "cosine", "date": date}
        for t in report["thresholds"]
        if t["estimable"]
    ]


def write_thresholds(model_source: Any, report: dict[str, Any], output: str | Path) -> tuple[Path, int]:
    """Save the model of ``model_source`` (a name or file ``load_model`` accepts) to ``output`` in the package's
    format with the report's measurable thresholds added to its metadata (replacing entries of the same set and
    FAR). Returns the path and how many thresholds were written."""
    from ..model_io import load_model, save_model

    if str(model_source).lower().endswith(".onnx"):
        raise CalibrationError(
            "thresholds are written into the package's own model format; give the .h5, "
            ".safetensors or pretrained name the ONNX file came from"
        )
    new = metadata_thresholds(report)
    if not new:
        raise CalibrationError(
            f"no target FAR is measurable on {report['different_pairs']} different pairs "
            f"(the lowest is {report['lowest_measurable_far']:.2g}); nothing written"
        )
    model = load_model(model_source)
    kept = [
        t
        for t in model.metadata.get("thresholds") or []
        if not any(t.get("set") == n["set"] and math.isclose(t.get("far", -1), n["far"]) for n in new)
    ]
    merged = sorted(kept + new, key=lambda t: (t["far"], str(t.get("set"))))
    return save_model(model, output, {"thresholds": merged}), len(new)
