"""Clustering metrics against their definitions written out face by face and pair by pair."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ghostfacenets.people.metrics import clustering_scores


def _by_definition(truth: list[int], predicted: list[int]) -> dict[str, float]:
    """BCubed and pairwise precision and recall, one face and one pair at a time; unsorted (-1) faces alone."""
    groups = [p if p != -1 else f"alone{i}" for i, p in enumerate(predicted)]
    n = len(truth)
    precision = recall = 0.0
    for i in range(n):
        same_group = [j for j in range(n) if groups[j] == groups[i]]
        same_person = [j for j in range(n) if truth[j] == truth[i]]
        both = [j for j in same_group if truth[j] == truth[i]]
        precision += len(both) / len(same_group)
        recall += len(both) / len(same_person)
    pairs = list(itertools.combinations(range(n), 2))
    together = [(i, j) for i, j in pairs if groups[i] == groups[j]]
    one_person = [(i, j) for i, j in pairs if truth[i] == truth[j]]
    both_pairs = [(i, j) for i, j in together if truth[i] == truth[j]]
    return {
        "bcubed_precision": precision / n,
        "bcubed_recall": recall / n,
        "pairwise_precision": len(both_pairs) / len(together) if together else 1.0,
        "pairwise_recall": len(both_pairs) / len(one_person) if one_person else 1.0,
    }


@pytest.mark.parametrize("seed", range(6))
def test_scores_match_the_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    truth = rng.integers(0, 6, n).tolist()
    predicted = rng.integers(-1, 5, n).tolist()
    scores = clustering_scores(truth, predicted)
    expected = _by_definition(truth, predicted)
    for name, value in expected.items():
        assert getattr(scores, name) == pytest.approx(value), name
    p, r = expected["bcubed_precision"], expected["bcubed_recall"]
    assert scores.bcubed_f == pytest.approx(2 * p * r / (p + r))
    assert scores.unsorted == pytest.approx(predicted.count(-1) / n)
    sizes = [predicted.count(g) for g in set(predicted) - {-1}]
    assert scores.groups == sum(s >= 2 for s in sizes)
    assert scores.singletons == sum(s == 1 for s in sizes)
    assert scores.people == len(set(truth))


def test_perfect_and_worst_groupings() -> None:
    truth = ["a", "a", "b", "b", "b", "c"]
    perfect = clustering_scores(truth, [7, 7, 3, 3, 3, 9])
    assert perfect.bcubed_f == perfect.pairwise_f == 1.0
    merged = clustering_scores(truth, [0] * 6)
    assert merged.bcubed_recall == 1.0 and merged.bcubed_precision == pytest.approx((2 * 2 + 3 * 3 + 1) / 36)
    nothing = clustering_scores(truth, [-1] * 6)  # nothing grouped: never wrong, recall of singletons only
    assert nothing.bcubed_precision == 1.0 and nothing.unsorted == 1.0 and nothing.groups == 0
    assert nothing.pairwise_recall == 0.0


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 true labels but 3"):
        clustering_scores([0, 1], [0, 1, 2])
