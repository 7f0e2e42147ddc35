"""ROC, CMC and per-group error figures (matplotlib's Agg canvas, no pyplot state), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GhostFaceNetsError
from ..files import VERSION_KEY, atomic_path, written_by
from .fairness import GroupedEvaluation
from .megaface import MegaFaceEvaluation
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


def _figure(columns: int = 1) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4 * columns, 4.8), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
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


def _roc_axes(axes: Any, curves: Sequence[tuple[str, np.ndarray, np.ndarray]], lowest: float, title: str) -> None:
    """Draw (name, FAR, TAR) curves on a log FAR axis from ``lowest`` to 1 (points at FAR 0 cannot be shown)."""
    for name, far, tar in curves:
        keep = far > 0
        axes.plot(far[keep], tar[keep], label=name)
    axes.set_xscale("log")
    axes.set_xlim(lowest, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")


def _set_curves(evaluations: Sequence[SetEvaluation]) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], float]:
    """The ROC curve of every set with both same and different pairs, and the lowest FAR any of them can show."""
    curves, lowest = [], 0.1
    for evaluation in evaluations:
        labels = evaluation.issame
        if labels.all() or not labels.any():
            continue
        fpr, tpr, _ = roc_curve(evaluation.scores, labels)
        lowest = min(lowest, 1.0 / int((~labels).sum()))
        auc = evaluation.metrics.get("auc")
        curves.append((evaluation.name + (f" (AUC {auc:.4f})" if auc is not None else ""), fpr, tpr))
    return curves, lowest


def plot_roc(evaluations: Sequence[SetEvaluation], path: str | Path, title: str = "ROC") -> Path:
    """One figure with the ROC curve (TAR against FAR, log scale) of every set; format from the file suffix.
    Sets without both same and different pairs have no curve; with no curve at all nothing is written."""
    path = check_plot_path(path)
    curves, lowest = _set_curves(evaluations)
    if not curves:
        raise GhostFaceNetsError(f"{path}: nothing to plot: no set has both same and different pairs")
    figure = _figure()
    _roc_axes(figure.add_subplot(), curves, lowest, title)
    return _save(figure, path)


def plot_megaface(evaluation: MegaFaceEvaluation, path: str | Path, title: str = "MegaFace") -> Path:
    """CMC curves (identification rate against rank) and ROC curves, one per distractor count, side by side."""
    path = check_plot_path(path)
    figure = _figure(2)
    cmc_axes, roc_axes = figure.subplots(1, 2)
    for size, result in evaluation.metrics["sizes"].items():
        cmc = np.array(result["cmc"])
        cmc_axes.plot(np.arange(1, len(cmc) + 1), 100 * cmc, label=f"{int(size):,} distractors")
    cmc_axes.set_xscale("log")
    cmc_axes.set_xlabel("rank")
    cmc_axes.set_ylim(top=100.5)
    cmc_axes.set_ylabel("identification rate (%)")
    cmc_axes.set_title(f"{title}: CMC")
    cmc_axes.grid(True, which="both", alpha=0.3)
    cmc_axes.legend(loc="lower right")
    curves = [(f"{size:,} distractors", far, tar) for size, (far, tar) in evaluation.roc.items()]
    lowest = min(far[far > 0].min() for _, far, _ in curves)
    _roc_axes(roc_axes, curves, lowest, f"{title}: ROC")
    return _save(figure, path)


def plot_groups(evaluation: GroupedEvaluation, path: str | Path, title: str = "groups") -> Path:
    """Per group: its ROC curve with its operating point at the one global threshold (left), and its FMR and FNMR
    at that threshold (right, log scale)."""
    path = check_plot_path(path)
    figure = _figure(2)
    roc_axes, bar_axes = figure.subplots(1, 2)
    curves, lowest = _set_curves(list(evaluation.groups.values()))
    at = evaluation.metrics["at_threshold"]
    if curves:
        _roc_axes(roc_axes, curves, lowest, f"{title}: ROC per group")
    for name in evaluation.groups:
        rates = at["groups"][name]
        if rates["fmr"] and rates["fnmr"] is not None:
            roc_axes.plot([rates["fmr"]], [1 - rates["fnmr"]], "o", color="black", markersize=4)
    names = list(evaluation.groups)
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "fmr", "FMR"), (0.2, "fnmr", "FNMR")):
        values = [at["groups"][n][key] for n in names]
        bar_axes.bar(x + offset, [v if v else np.nan for v in values], width=0.4, label=label)
    bar_axes.set_xticks(x, names, rotation=30 if len(names) > 4 else 0)
    bar_axes.set_yscale("log")
    bar_axes.set_ylabel("error rate at the global threshold")
    bar_axes.set_title(f"{title}: threshold {at['threshold']:.4f} (FAR {at['far']:g} on all pairs)")
    bar_axes.grid(True, axis="y", which="both", alpha=0.3)
    bar_axes.legend()
    return _save(figure, path)
