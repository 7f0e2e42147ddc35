"""How well a grouping matches the true identities: BCubed and pairwise precision, recall and F, groups against
people, and the share of faces left unsorted.

Faces left unsorted (``-1``, also DBSCAN's and HDBSCAN's noise) count as groups of one: they cost recall, never
precision, and their share is reported beside. BCubed (Bagga and Baldwin 1998; Amigó et al. 2009) averages over
faces: a face's precision is the share of its group that is its person, its recall the share of its person that is
in its group. Pairwise precision is the share of the pairs put together that are one person, recall the share of
one person's pairs that were put together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

UNSORTED = -1


@dataclass(frozen=True)
class ClusteringScores:
    """The scores of one grouping against the truth (fractions in [0, 1])."""

    faces: int
    people: int  # distinct true identities
    groups: int  # predicted groups of two faces or more
    singletons: int  # predicted groups of one face (not unsorted)
    unsorted: float  # share of faces left unsorted
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _f(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _as_groups(predicted: np.ndarray) -> np.ndarray:
    """Group labels with every unsorted face in a group of its own (new labels above the others)."""
    groups = np.asarray(predicted, dtype=np.int64).copy()
    loose = groups == UNSORTED
    start = groups.max(initial=0) + 1
    groups[loose] = start + np.arange(int(loose.sum()))
    return groups


def clustering_scores(truth: np.ndarray | list[Any], predicted: np.ndarray | list[int]) -> ClusteringScores:
    """Scores of ``predicted`` group labels (``-1``: unsorted) against ``truth`` identity labels, one per face."""
    truth_ids = np.unique(np.asarray(truth), return_inverse=True)[1].reshape(-1)
    raw = np.asarray(predicted, dtype=np.int64).reshape(-1)
    if truth_ids.shape != raw.shape:
        raise ValueError(f"{len(truth_ids)} true labels but {len(raw)} predicted ones")
    n = len(raw)
    if n == 0:
        raise ValueError("no faces to score")
    groups = np.unique(_as_groups(raw), return_inverse=True)[1].reshape(-1)
    # contingency of (group, person) cells and the sizes of groups and people
    cells, counts = np.unique(np.stack([groups, truth_ids]), axis=1, return_counts=True)
    group_size = np.bincount(groups)
    person_size = np.bincount(truth_ids)
    counts = counts.astype(np.float64)
    # BCubed: each face of cell (g, p) has precision n_gp / n_g and recall n_gp / n_p
    precision = float(np.sum(counts * counts / group_size[cells[0]]) / n)
    recall = float(np.sum(counts * counts / person_size[cells[1]]) / n)
    together = float(np.sum(counts * (counts - 1)) / 2)  # pairs in one group and one person
    grouped_pairs = float(np.sum(group_size * (group_size - 1.0)) / 2)
    person_pairs = float(np.sum(person_size * (person_size - 1.0)) / 2)
    pair_precision = together / grouped_pairs if grouped_pairs else 1.0
    pair_recall = together / person_pairs if person_pairs else 1.0
    real = raw[raw != UNSORTED]
    sizes = np.bincount(np.unique(real, return_inverse=True)[1]) if len(real) else np.zeros(0, np.int64)
    return ClusteringScores(
        faces=n,
        people=len(person_size),
        groups=int(np.sum(sizes >= 2)),
        singletons=int(np.sum(sizes == 1)),
        unsorted=float(np.mean(raw == UNSORTED)),
        bcubed_precision=precision,
        bcubed_recall=recall,
        bcubed_f=_f(precision, recall),
        pairwise_precision=pair_precision,
        pairwise_recall=pair_recall,
        pairwise_f=_f(pair_precision, pair_recall),
    )
