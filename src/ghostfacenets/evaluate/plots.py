"""ROC figures (matplotlib's Agg canvas, no pyplot state), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_path
from .metrics import roc_curve
from .verification import SetEvaluation


def plot_roc(evaluations: Sequence[SetEvaluation], path: str | Path, title: str = "ROC") -> Path:
    """One figure with the ROC curve (TAR against FAR, log scale) of every set; format from the file suffix."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    lowest = 1.0
    for evaluation in evaluations:
        labels = evaluation.issame
        if labels.all() or not labels.any():
            continue  # no ROC without both kinds of pairs
        fpr, tpr, _ = roc_curve(evaluation.scores, labels)
        floor = 1.0 / max(int((~labels).sum()), 1)
        lowest = min(lowest, floor)
        keep = fpr > 0
        auc = evaluation.metrics.get("auc")
        label = evaluation.name + (f" (AUC {auc:.4f})" if auc is not None else "")
        axes.plot(fpr[keep], tpr[keep], label=label)  # FAR 0 cannot be shown on a log axis
    axes.set_xscale("log")
    axes.set_xlim(lowest, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if evaluations:
        axes.legend(loc="lower right")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png")
    return path
