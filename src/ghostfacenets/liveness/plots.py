"""Figures of a presentation-attack evaluation: the DET curve (ISO/IEC 30107-3's APCER against BPCER on
normal-deviate axes) and the score distributions, written atomically like the package's other figures."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np

from ..evaluate.plots import _figure, _save, check_plot_path
from .pad import PadScores

_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)
_NORMAL = NormalDist()


def _probit(values: np.ndarray, lowest: float) -> np.ndarray:
    clipped = np.clip(np.asarray(values, dtype=np.float64), lowest, 1 - lowest)
    return np.array([_NORMAL.inv_cdf(float(v)) for v in clipped])


def plot_det(scores: PadScores, path: str | Path, threshold: float, title: str = "DET") -> Path:
    """APCER of each species and their maximum against BPCER, both on the normal-deviate scale of DET curves, with
    the operating point at ``threshold`` marked."""
    path = check_plot_path(path)
    thresholds = scores.thresholds()
    bpcer, apcer = scores.rates(thresholds)
    counts = [len(scores.bona_fide), *(len(scores.attacks[n]) for n in scores.species)]
    lowest = max(min(0.5 / max(counts), 0.01), 5e-4)  # rates below about 1 / count cannot be measured
    figure = _figure()
    axes = figure.add_subplot()
    curves = dict(apcer)
    if len(apcer) > 1:
        curves["max over species"] = np.max(np.stack(list(apcer.values())), axis=0)
    for name, values in curves.items():
        axes.plot(_probit(values, lowest), _probit(bpcer, lowest), label=name, linewidth=2 if "max" in name else 1)
    point_bpcer, point_apcer = scores.rates(np.array([threshold]))
    worst = max(v[0] for v in point_apcer.values())
    axes.plot(*_probit(np.array([worst, point_bpcer[0]]), lowest), "ko", label=f"threshold {threshold:.4g}")
    ticks = [t for t in _TICKS if lowest <= t <= 1 - lowest]
    for setter, limits in ((axes.set_xticks, axes.set_xlim), (axes.set_yticks, axes.set_ylim)):
        setter(_probit(np.array(ticks), lowest), [f"{100 * t:g}" for t in ticks])
        limits(*_probit(np.array([lowest, 1 - lowest]), lowest))
    axes.set_xlabel("APCER (%)")
    axes.set_ylabel("BPCER (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    return _save(figure, path)


def plot_score_distributions(scores: PadScores, path: str | Path, threshold: float, title: str = "scores") -> Path:
    """Histograms of the liveness scores of bona fide presentations and of each attack species, with the
    threshold."""
    path = check_plot_path(path)
    figure = _figure()
    axes = figure.add_subplot()
    bins = np.linspace(0.0, 1.0, 51)
    groups = {"bona fide": scores.bona_fide, **{n: scores.attacks[n] for n in scores.species}}
    for name, values in groups.items():
        axes.hist(values, bins=bins, histtype="step", density=True, linewidth=1.5, label=f"{name} ({len(values)})")
    axes.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.4g}")
    axes.set_xlabel("liveness score (real-face probability)")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(loc="upper center", fontsize="small")
    return _save(figure, path)
