"""Accuracy across demographic groups: per-group verification metrics, their spread, and the error rates each group
meets at one global threshold (NIST FRVT's demographic view).

A grouped evaluation reports, for pairs labelled with a group each:

* per group, every metric of a ``.bin`` result (``evaluate.metrics``: 10-fold accuracy over that group's pairs in
  order, AUC, TAR at FAR, ...);
* ``fairness``: ``mean`` and ``std`` (population, ``numpy.std``) of the groups' 10-fold accuracies and ``ser``, the
  skewed error ratio: the largest 10-fold error (1 - accuracy) over the smallest (null when a group makes no error,
  or when a group has fewer than 10 pairs);
* ``at_threshold``: one threshold set on all pairs at the target FAR (the threshold a deployment uses), and per group
  FMR (different-person pairs accepted / different-person pairs), FNMR (same-person pairs rejected / same-person
  pairs) and the accuracy of that one decision rule, with ``fmr_ratio`` and ``fnmr_ratio``, the largest rate over
  the smallest (null when the smallest is 0). A pair is accepted when its cosine is greater than the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.folders import scan_identity_folder
from ..data.pairs import read_labelled_pairs
from ..errors import GhostFaceNetsError
from .distributed import ImageJob, array_job, file_job
from .metrics import allowed_false_accepts, pair_scores, threshold_at_far
from .pairs import folder_crops, make_pairs
from .verification import PairSet, SetEvaluation, evaluate_embedded_pairs

DEFAULT_FAR = 1e-3
RESERVED_KEYS = ("fairness", "at_threshold")


@dataclass(frozen=True)
class GroupedEvaluation:
    """Per-group evaluations (for figures) and the JSON-ready result: one entry per group, ``fairness`` and
    ``at_threshold``."""

    name: str
    groups: dict[str, SetEvaluation]
    metrics: dict[str, Any]


def fairness_summary(accuracies: Mapping[str, float | None]) -> dict[str, float | None]:
    """``mean``, ``std`` (population) and ``ser`` (largest error over smallest) of the groups' accuracies; all null
    when a group has none, ``ser`` null when the smallest error is 0."""
    values = list(accuracies.values())
    if not values or any(v is None for v in values):
        return {"mean": None, "std": None, "ser": None}
    array = np.array(values, dtype=np.float64)
    errors = 1.0 - array
    smallest = float(errors.min())
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "ser": float(errors.max() / smallest) if smallest > 0 else None,
    }


def _ratio(values: list[float]) -> float | None:
    return float(max(values) / min(values)) if len(values) > 1 and min(values) > 0 else None


def rates_at_threshold(scores: np.ndarray, issame: np.ndarray, groups: np.ndarray, far: float) -> dict[str, Any]:
    """FMR, FNMR and accuracy per group at the one threshold that gives FAR ``far`` on all the pairs
    (:func:`ghostfacenets.evaluate.metrics.threshold_at_far`); ``estimable`` is false when the pairs hold fewer
    than 1/``far`` different-person pairs (the threshold then accepts none of them)."""
    scores, issame, groups = np.asarray(scores), np.asarray(issame, dtype=bool), np.asarray(groups)
    threshold, _ = threshold_at_far(scores, issame, far)
    accepted = scores > threshold
    per_group: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(groups.tolist()):
        mask = groups == name
        same, diff = mask & issame, mask & ~issame
        per_group[name] = {
            "pairs": int(mask.sum()),
            "same_pairs": int(same.sum()),
            "different_pairs": int(diff.sum()),
            "fmr": float(accepted[diff].mean()) if diff.any() else None,
            "fnmr": float((~accepted[same]).mean()) if same.any() else None,
            "accuracy": float((accepted[mask] == issame[mask]).mean()),
        }
    fmrs = [g["fmr"] for g in per_group.values() if g["fmr"] is not None]
    fnmrs = [g["fnmr"] for g in per_group.values() if g["fnmr"] is not None]
    return {
        "far": far,
        "threshold": threshold,
        "estimable": allowed_false_accepts(int((~issame).sum()), far) >= 1,
        "fmr": float(accepted[~issame].mean()),
        "fnmr": float((~accepted[issame]).mean()),
        "groups": per_group,
        "fmr_ratio": _ratio(fmrs),
        "fnmr_ratio": _ratio(fnmrs),
    }


@dataclass(frozen=True)
class GroupedPairSet:
    """Labelled pairs with a group each, ready to embed: the crops (``job``), pairs (P, 2) of crop indices, labels
    (P,) and group names (P,). Each group's pairs keep their order (its 10 folds are contiguous in that order)."""

    name: str
    job: ImageJob
    pairs: np.ndarray
    issame: np.ndarray
    groups: np.ndarray

    def evaluate(self, embeddings: np.ndarray, flip: bool = True, far: float = DEFAULT_FAR) -> GroupedEvaluation:
        """Per-group metrics, their spread and the rates at one threshold (the module docstring)."""
        names = list(dict.fromkeys(self.groups.tolist()))
        clash = [name for name in names if name in RESERVED_KEYS]
        if clash:
            raise GhostFaceNetsError(f"{self.name}: a group may not be named {clash[0]!r} (a key of the result)")
        per_group = {
            name: evaluate_embedded_pairs(
                name, embeddings, self.pairs[self.groups == name], self.issame[self.groups == name], flip
            )
            for name in names
        }
        scores, _ = pair_scores(embeddings, self.pairs)
        metrics: dict[str, Any] = {name: evaluation.metrics for name, evaluation in per_group.items()}
        metrics["fairness"] = fairness_summary({n: e.metrics["accuracy_10fold_mean"] for n, e in per_group.items()})
        metrics["at_threshold"] = rates_at_threshold(scores, self.issame, self.groups, far)
        return GroupedEvaluation(self.name, per_group, metrics)


def _indexed(images_a: list[Path], images_b: list[Path]) -> tuple[list[Path], np.ndarray]:
    """Distinct image paths (each embedded once) and the pairs as indices into them."""
    index: dict[Path, int] = {}
    rows = [index.setdefault(p, len(index)) for pair in zip(images_a, images_b) for p in pair]
    return list(index), np.array(rows, dtype=np.int64).reshape(-1, 2)


def read_pairs_set(path: str | Path, group_column: str | None = None) -> PairSet | GroupedPairSet:
    """A pairs file of aligned crops (:func:`ghostfacenets.data.pairs.read_labelled_pairs`, paths relative to the
    file) as a :class:`PairSet`, or with ``group_column`` as a :class:`GroupedPairSet`. Every image must exist."""
    path = Path(path)
    table = read_labelled_pairs(path, group_column=group_column)
    paths, pairs = _indexed(table.images_a, table.images_b)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise GhostFaceNetsError(f"{path}: {len(missing)} image(s) listed but absent, e.g. {missing[0]}")
    job = file_job(path.stem, paths)
    if table.groups is None:
        return PairSet(path.stem, job, pairs, table.issame)
    return GroupedPairSet(path.stem, job, pairs, table.issame, np.array(table.groups))


def read_groups_file(path: str | Path) -> dict[str, str]:
    """identity -> group from a file of "identity,group" lines (commas or tabs; a first line ``identity,group`` is
    a header; ``#`` comments)."""
    path = Path(path)
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise GhostFaceNetsError(f"{path}: cannot read the groups file ({exc})") from None
    groups: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.split(","))]
        if len(fields) != 2 or not all(fields):
            raise GhostFaceNetsError(f"{path}:{number}: expected 'identity,group', got {line!r}")
        if number == 1 and [f.lower() for f in fields] == ["identity", "group"]:
            continue
        if groups.get(fields[0], fields[1]) != fields[1]:
            raise GhostFaceNetsError(f"{path}:{number}: {fields[0]} is listed in two groups")
        groups[fields[0]] = fields[1]
    if not groups:
        raise GhostFaceNetsError(f"{path}: no identities in the groups file")
    return groups


def read_grouped_folder(
    root: str | Path, groups_file: str | Path, num_pairs: int | None = None, seed: int = 0, size: int | None = None
) -> GroupedPairSet:
    """An identity folder whose identities belong to groups: pairs are drawn within each group (every pair, or
    ``num_pairs`` per group as :func:`ghostfacenets.evaluate.pairs.make_pairs` draws them, seeded), so each pair
    has one group. Every identity of the folder must have a group."""
    folder = scan_identity_folder(root)
    group_of = read_groups_file(groups_file)
    without = sorted(set(folder.names) - set(group_of))
    if without:
        raise GhostFaceNetsError(
            f"{groups_file}: {len(without)} identit{'y' if len(without) == 1 else 'ies'} of {root} without a group, "
            f"e.g. {without[0]}"
        )
    image_groups = np.array([group_of[folder.names[label]] for label in folder.labels])
    parts, labels, names = [], [], []
    for name in sorted(set(image_groups.tolist())):
        members = np.flatnonzero(image_groups == name)
        pairs, issame = make_pairs(np.asarray(folder.labels)[members], num_pairs, seed)
        parts.append(members[pairs])
        labels.append(issame)
        names.append(np.full(len(pairs), name))
    images = np.stack([image for _, image in folder_crops(folder, size, "identity folders for evaluation")])
    title = Path(root).resolve().name
    return GroupedPairSet(
        title, array_job(title, images), np.concatenate(parts), np.concatenate(labels), np.concatenate(names)
    )
