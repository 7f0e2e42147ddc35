"""Measuring the liveness check on a user's labelled set (``evaluate --pad``) and calibrating its threshold at a
target BPCER (``calibrate --liveness``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..files import written_by
from .checker import DECISION_RULE, LivenessChecker
from .datasets import PadSet, ScoredSet, score_pad_set
from .model import load_liveness_model, save_liveness_model
from .pad import PadMetricsError, PadScores, pad_report, threshold_at_bpcer

Detect = Callable[[np.ndarray], list[Any]]


@dataclass
class PadEvaluation:
    """A scored set, its scores by kind and the ISO/IEC 30107-3 report at the checker's threshold."""

    scored: ScoredSet
    scores: PadScores
    report: dict[str, Any]


def evaluate_pad(
    pad_set: PadSet, checker: LivenessChecker, detect: Detect, frames: int = 5, progress: bool = False
) -> PadEvaluation:
    """Score every presentation of ``pad_set`` (largest face of each, ``detect`` finding them) and report the
    metrics at the checker's threshold."""
    scored = score_pad_set(pad_set, detect, checker.scores, frames, progress)
    scores = scored.pad_scores()
    report = {
        **written_by(),
        "set": pad_set.name,
        "layout": pad_set.layout,
        "model": checker.model.name,
        "backend": checker.model.backend,
        "rule": DECISION_RULE,
        **checker.threshold.to_dict(),
        "threshold_note": checker.threshold.note,
        **pad_report(scores, checker.threshold.value),
        "unscored": {str(path): why for path, why in scored.unscored.items()},
    }
    return PadEvaluation(scored, scores, report)


def calibrate_liveness(
    pad_set: PadSet,
    checker: LivenessChecker,
    detect: Detect,
    bpcer: float = 0.01,
    frames: int = 5,
    progress: bool = False,
) -> dict[str, Any]:
    """The threshold at ``bpcer`` on the bona fide presentations of ``pad_set`` (attack ones, when present, give
    the APCER there)."""
    scored = score_pad_set(pad_set, detect, checker.scores, frames, progress)
    bona_fide = np.array([scored.scores[s.path] for s in pad_set.samples if s.is_bona_fide and s.path in scored.scores])
    if not len(bona_fide):
        raise PadMetricsError(f"{pad_set.name}: no live photo with a face to calibrate on")
    threshold, measured = threshold_at_bpcer(bona_fide, bpcer)
    report: dict[str, Any] = {
        **written_by(),
        "set": pad_set.name,
        "model": checker.model.name,
        "rule": DECISION_RULE,
        "bpcer_target": bpcer,
        "threshold": threshold,
        "bpcer": measured,
        "bona_fide": len(bona_fide),
        "estimable": len(bona_fide) * bpcer >= 1 - 1e-9,
        "attacks": None,
        "unscored": {str(path): why for path, why in scored.unscored.items()},
    }
    with contextlib.suppress(PadMetricsError):  # without attack presentations the threshold stands on live ones
        report["attacks"] = pad_report(scored.pad_scores(), threshold)["at_threshold"]
    return report


def write_calibrated(report: dict[str, Any], output: str | Path, model: str | Path | None = None) -> Path:
    """The liveness weights of ``model`` (None: the shipped ones; a liveness ``.safetensors`` file) saved to
    ``output`` with the calibrated threshold of ``report`` in their metadata, where :class:`LivenessChecker` finds
    it."""
    weights = load_liveness_model(model)
    calibrated = {
        "value": report["threshold"],
        "source": "calibrated",
        "bpcer": report["bpcer_target"],
        "measured_bpcer": report["bpcer"],
        "set": report["set"],
        "bona_fide": report["bona_fide"],
        "apcer": None if report["attacks"] is None else report["attacks"]["apcer"],
        "date": datetime.now(timezone.utc).date().isoformat(),
    }
    return save_liveness_model(weights, output, {"threshold": calibrated})
