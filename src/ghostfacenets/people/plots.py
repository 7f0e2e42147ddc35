"""The error-versus-reject figure (matplotlib's Agg canvas, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..evaluate.plots import _figure, _save
from .evaluation import RejectCurve


def plot_reject_curves(curves: Sequence[RejectCurve], path: str | Path, title: str) -> Path:
    """FNMR at a fixed threshold against the share of lowest-quality faces rejected, one line per quality
    measure (the combined score drawn thick, "random" dashed)."""
    figure = _figure()
    axes = figure.add_subplot(1, 1, 1)
    for curve in curves:
        style = {"linewidth": 2.5} if curve.name == "quality" else {"linestyle": "--"} if curve.name == "random" else {}
        axes.plot([100 * f for f in curve.fractions], [100 * v for v in curve.fnmr], marker="o", label=curve.name,
                  **style)  # fmt: skip
    axes.set_xlabel("lowest-quality faces rejected (%)")
    axes.set_ylabel(f"FNMR at FMR {curves[0].fmr:g} (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left", fontsize="small", ncol=3)
    return _save(figure, Path(path))
