"""Presentation-attack detection metrics of ISO/IEC 30107-3 from liveness scores (higher = more live; a
presentation is classified bona fide when its score is above the threshold, as the gate decides).

* APCER of a presentation attack instrument species (PAIS): the share of its attack presentations classified bona
  fide; the system's APCER is the maximum over the species (the standard's worst-case rule).
* BPCER: the share of bona fide presentations classified as attacks.
* BPCER at APCER = x (BPCER100, BPCER20, BPCER10 for x = 1 %, 5 %, 10 %): the BPCER at the lowest threshold whose
  maximum APCER is at most x; APCER at BPCER = y: the maximum APCER at the highest threshold whose BPCER is at most y.
* Non-response rates (APNRR, BPNRR): presentations the system gave no score (no face found); they are left out of
  APCER and BPCER and reported beside them.
* ACER = (APCER + BPCER) / 2 is not an ISO/IEC 30107-3 metric (the standard keeps the two error types apart); it is
  given because the OULU-NPU and CelebA-Spoof protocols report it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GhostFaceNetsError

APCER_TARGETS = (0.01, 0.05, 0.10)  # BPCER100, BPCER20, BPCER10
BPCER_TARGETS = (0.01,)


class PadMetricsError(GhostFaceNetsError):
    """Scores from which the metrics cannot be computed."""


def _above(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_scores`` are above each threshold."""
    return len(sorted_scores) - np.searchsorted(sorted_scores, thresholds, side="right")


@dataclass(frozen=True)
class PadScores:
    """Liveness scores of bona fide presentations and of attack presentations by species, with the presentations
    of each kind that got no score (non-responses)."""

    bona_fide: np.ndarray
    attacks: Mapping[str, np.ndarray]
    bona_fide_unscored: int = 0
    attacks_unscored: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if not len(self.bona_fide):
            raise PadMetricsError("no bona fide (live) presentation with a score: BPCER cannot be measured")
        if not self.attacks or not any(len(s) for s in self.attacks.values()):
            raise PadMetricsError("no attack presentation with a score: APCER cannot be measured")

    @property
    def species(self) -> list[str]:
        return [name for name, scores in self.attacks.items() if len(scores)]

    def thresholds(self) -> np.ndarray:
        """Every threshold where a decision changes: below all scores, and at each distinct score (ascending)."""
        every = np.concatenate([self.bona_fide, *self.attacks.values()])
        return np.concatenate([[np.nextafter(every.min(), -np.inf)], np.unique(every)])

    def rates(self, thresholds: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(BPCER, APCER per species) at each threshold."""
        bona_fide = np.sort(self.bona_fide)
        bpcer = 1.0 - _above(bona_fide, thresholds) / len(bona_fide)
        apcer = {
            name: _above(np.sort(self.attacks[name]), thresholds) / len(self.attacks[name]) for name in self.species
        }
        return bpcer, apcer


def rates_at(scores: PadScores, threshold: float) -> dict[str, Any]:
    """APCER per species and their maximum, BPCER and ACER at one threshold."""
    bpcer, apcer = scores.rates(np.array([threshold]))
    per_species = {name: float(values[0]) for name, values in apcer.items()}
    worst = max(per_species.values())
    return {
        "threshold": float(threshold),
        "apcer": per_species,
        "apcer_max": worst,
        "apcer_max_species": max(per_species, key=lambda n: per_species[n]),
        "bpcer": float(bpcer[0]),
        "acer": (worst + float(bpcer[0])) / 2,
    }


def bpcer_at_apcer(scores: PadScores, target: float) -> dict[str, Any]:
    """The BPCER at the lowest threshold where the maximum APCER over species is at most ``target``."""
    thresholds = scores.thresholds()
    bpcer, apcer = scores.rates(thresholds)
    worst = np.max(np.stack(list(apcer.values())), axis=0)
    index = int(np.argmax(worst <= target + 1e-12))  # worst decreases with the threshold; the last one reaches 0
    fewest = min(len(scores.attacks[n]) for n in scores.species)
    return {
        "apcer_target": target,
        "bpcer": float(bpcer[index]),
        "threshold": float(thresholds[index]),
        "apcer_max": float(worst[index]),
        "estimable": fewest * target >= 1 - 1e-9,
    }


def apcer_at_bpcer(scores: PadScores, target: float) -> dict[str, Any]:
    """The APCER per species and their maximum at the highest threshold whose BPCER is at most ``target``."""
    thresholds = scores.thresholds()
    bpcer, apcer = scores.rates(thresholds)
    index = int(np.flatnonzero(bpcer <= target + 1e-12)[-1])  # bpcer grows with the threshold; the lowest is 0
    per_species = {name: float(values[index]) for name, values in apcer.items()}
    return {
        "bpcer_target": target,
        "apcer": per_species,
        "apcer_max": max(per_species.values()),
        "threshold": float(thresholds[index]),
        "bpcer": float(bpcer[index]),
        "estimable": len(scores.bona_fide) * target >= 1 - 1e-9,
    }


def threshold_at_bpcer(bona_fide: np.ndarray, target: float) -> tuple[float, float]:
    """The highest threshold rejecting at most ``target`` of the bona fide scores (a presentation is bona fide when
    its score is above the threshold), and the BPCER there."""
    if not 0 < target < 1:
        raise PadMetricsError(f"a target BPCER lies strictly between 0 and 1, got {target:g}")
    scores = np.sort(np.asarray(bona_fide, dtype=np.float64))
    if not len(scores):
        raise PadMetricsError("no bona fide score to calibrate on")
    allowed = int(np.floor(target * len(scores) + 1e-9))  # bona fide presentations that may be rejected
    threshold = float(np.nextafter(scores[allowed], -np.inf)) if allowed < len(scores) else float(scores[-1])
    return threshold, float(np.mean(scores <= threshold))


def pad_report(
    scores: PadScores,
    threshold: float,
    apcer_targets: Sequence[float] = APCER_TARGETS,
    bpcer_targets: Sequence[float] = BPCER_TARGETS,
) -> dict[str, Any]:
    """Every ISO/IEC 30107-3 figure of ``scores``: counts, non-response rates, the rates at ``threshold``, BPCER at
    each APCER target and APCER at each BPCER target."""
    unscored = dict(scores.attacks_unscored or {})
    attacks_total = {n: len(scores.attacks.get(n, ())) + unscored.get(n, 0) for n in {*scores.attacks, *unscored}}
    bona_fide_total = len(scores.bona_fide) + scores.bona_fide_unscored
    return {
        "bona_fide": len(scores.bona_fide),
        "attacks": {name: len(scores.attacks[name]) for name in scores.species},
        "non_response": {
            "bpnrr": scores.bona_fide_unscored / bona_fide_total,
            "apnrr": {n: unscored.get(n, 0) / total for n, total in sorted(attacks_total.items()) if total},
            "bona_fide_unscored": scores.bona_fide_unscored,
            "attacks_unscored": {n: c for n, c in sorted(unscored.items()) if c},
        },
        "at_threshold": rates_at(scores, threshold),
        "bpcer_at_apcer": {f"{t:g}": bpcer_at_apcer(scores, t) for t in apcer_targets},
        "apcer_at_bpcer": {f"{t:g}": apcer_at_bpcer(scores, t) for t in bpcer_targets},
        "scores": {
            "bona_fide": _summary(scores.bona_fide),
            **{name: _summary(scores.attacks[name]) for name in scores.species},
        },
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.0, 0.05, 0.5, 0.95, 1.0])
    return {"min": float(q[0]), "p05": float(q[1]), "median": float(q[2]), "p95": float(q[3]), "max": float(q[4])}
