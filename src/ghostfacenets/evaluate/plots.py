"""ROC figures (matplotlib's Agg canvas, no pyplot state), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import GhostFaceNetsError
from ..files import VERSION_KEY, atomic_path, written_by
from .metrics import roc_curve
from .verification import SetEvaluation


def check_plot_path(path: str | Path) -> Path:
    """``path`` if matplotlib can write its suffix (none: PNG), else a one-line error listing the formats."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix.lstrip(".").lower() not in formats:
        raise GhostFaceNetsError(
            f"{path}: matplotlib cannot write {path.suffix} figures; use one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    return path


def plot_roc(evaluations: Sequence[SetEvaluation], path: str | Path, title: str = "ROC") -> Path:
    """One figure with the ROC curve (TAR against FAR, log scale) of every set; format from the file suffix.
    Sets without both same and different pairs have no curve; with no curve at all nothing is written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = check_plot_path(path)
    curves = [e for e in evaluations if e.issame.any() and not e.issame.all()]
    if not curves:
        raise GhostFaceNetsError(f"{path}: nothing to plot: no set has both same and different pairs")
    figure = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    lowest = 1.0
    for evaluation in curves:
        labels = evaluation.issame
        fpr, tpr, _ = roc_curve(evaluation.scores, labels)
        floor = 1.0 / max(int((~labels).sum()), 1)
        lowest = min(lowest, floor)
        keep = fpr > 0
        auc = evaluation.metrics.get("auc")
        label = evaluation.name + (f" (AUC {auc:.4f})" if auc is not None else "")
        axes.plot(fpr[keep], tpr[keep], label=label)  # FAR 0 cannot be shown on a log axis
    axes.set_xscale("log")
    axes.set_xlim(min(lowest, 0.1), 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    file_format = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=file_format, metadata=_software(file_format))
    return path


def _software(file_format: str) -> dict[str, str] | None:
    """The figure's "made by" metadata where the format has a field for it: PNG Software, PDF/SVG/PS Creator."""
    import matplotlib

    made_by = f"ghostfacenets {written_by()[VERSION_KEY]} (matplotlib {matplotlib.__version__})"
    if file_format == "png":
        return {"Software": made_by}
    if file_format in ("pdf", "svg", "svgz", "ps", "eps"):
        return {"Creator": made_by}
    return None
