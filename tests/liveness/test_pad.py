"""ISO/IEC 30107-3 metrics against their definitions written out by brute force over every threshold."""

from __future__ import annotations

import numpy as np
import pytest

from ghostfacenets.liveness.pad import (
    PadMetricsError,
    PadScores,
    apcer_at_bpcer,
    bpcer_at_apcer,
    pad_report,
    rates_at,
    threshold_at_bpcer,
)


def _scores(seed: int = 0) -> PadScores:
    rng = np.random.default_rng(seed)
    bona_fide = np.round(rng.beta(6, 1.5, 150), 3)  # rounded: ties between and within kinds
    attacks = {"print": np.round(rng.beta(1.5, 4, 120), 3), "replay": np.round(rng.beta(2.5, 3, 60), 3)}
    return PadScores(bona_fide, attacks, bona_fide_unscored=3, attacks_unscored={"replay": 2, "mask": 4})


def _apcer(attack: np.ndarray, t: float) -> float:
    return sum(1 for s in attack if s > t) / len(attack)  # attack classified bona fide


def _bpcer(bona_fide: np.ndarray, t: float) -> float:
    return sum(1 for s in bona_fide if not s > t) / len(bona_fide)  # bona fide classified attack


def _candidates(scores: PadScores) -> list[float]:
    every = sorted({*scores.bona_fide.tolist(), *(v for a in scores.attacks.values() for v in a.tolist())})
    return [every[0] - 1.0, *every]


def test_rates_at_a_threshold() -> None:
    scores = _scores()
    for t in (0.2, 0.5, 0.915, 0.0, 1.0):
        got = rates_at(scores, t)
        apcer = {n: _apcer(a, t) for n, a in scores.attacks.items()}
        assert got["apcer"] == pytest.approx(apcer)
        assert got["apcer_max"] == pytest.approx(max(apcer.values()))
        assert got["bpcer"] == pytest.approx(_bpcer(scores.bona_fide, t))
        assert got["acer"] == pytest.approx((max(apcer.values()) + _bpcer(scores.bona_fide, t)) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bpcer_at_apcer_and_apcer_at_bpcer(seed: int) -> None:
    scores = _scores(seed)
    candidates = _candidates(scores)
    for target in (0.01, 0.05, 0.10, 0.3):
        # the lowest threshold where every species' APCER is within the target
        t = next(t for t in candidates if all(_apcer(a, t) <= target for a in scores.attacks.values()))
        got = bpcer_at_apcer(scores, target)
        assert got["bpcer"] == pytest.approx(_bpcer(scores.bona_fide, t))
        assert got["estimable"] == (60 * target >= 1)
    for target in (0.01, 0.05):
        # the highest threshold whose BPCER is within the target
        t = [t for t in candidates if _bpcer(scores.bona_fide, t) <= target][-1]
        got = apcer_at_bpcer(scores, target)
        assert got["apcer_max"] == pytest.approx(max(_apcer(a, t) for a in scores.attacks.values()))
        assert got["bpcer"] <= target


def test_threshold_at_bpcer() -> None:
    rng = np.random.default_rng(3)
    live = np.round(rng.uniform(0.5, 1.0, 200), 2)
    for target in (0.01, 0.05, 0.2):
        t, measured = threshold_at_bpcer(live, target)
        assert _bpcer(live, t) == pytest.approx(measured) and measured <= target
        # no higher threshold keeps the BPCER within the target
        assert all(_bpcer(live, u) > target for u in sorted(set(live.tolist())) if u > t)
    with pytest.raises(PadMetricsError, match="strictly between"):
        threshold_at_bpcer(live, 1.0)


def test_report_counts_non_responses_and_refuses_empty_kinds() -> None:
    report = pad_report(_scores(), 0.915)
    assert report["bona_fide"] == 150 and report["attacks"] == {"print": 120, "replay": 60}
    nr = report["non_response"]
    assert nr["bpnrr"] == pytest.approx(3 / 153)
    assert nr["apnrr"] == pytest.approx({"mask": 1.0, "print": 0.0, "replay": 2 / 62})
    assert set(report["bpcer_at_apcer"]) == {"0.01", "0.05", "0.1"} and set(report["apcer_at_bpcer"]) == {"0.01"}
    with pytest.raises(PadMetricsError, match="bona fide"):
        PadScores(np.array([]), {"print": np.array([0.1])})
    with pytest.raises(PadMetricsError, match="attack"):
        PadScores(np.array([0.9]), {"print": np.array([])})
