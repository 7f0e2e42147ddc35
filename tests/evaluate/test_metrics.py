"""Verification metrics against a hand-worked example, insightface's own code and brute-force definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.evaluate.metrics import (
    best_threshold_accuracy,
    cosine_scores,
    equal_error_rate,
    kfold_accuracy,
    kfold_splits,
    roc_auc,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    verification_metrics,
)
from tests.helpers.references import brute_best_threshold, brute_tar, insightface_evaluate, sklearn_kfold

# ------------------------------------------------------------------------------------------ insightface reference
# calculate_accuracy / calculate_roc from insightface recognition/arcface_torch/eval/verification.py (pca=0 branch),
# with sklearn's KFold(n_splits, shuffle=False) written out (sklearn is not a dependency).


def _synthetic_pairs(n_pairs: int, dim: int, seed: int, noise: float = 1.0):
    """Embeddings of pairs: same pairs share a centre, so accuracies land between chance and perfection."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    a = rng.normal(size=(n_pairs, dim))
    b = np.where(issame[:, None], a + noise * rng.normal(size=(n_pairs, dim)), rng.normal(size=(n_pairs, dim)))
    return a.astype(np.float32), b.astype(np.float32), issame


# --------------------------------------------------------------------------------------------- hand-worked example
# same-pair cosines 0.9, 0.8, 0.3; different-pair cosines 0.7, 0.2, 0.1 (accepted when score > threshold).
HAND_SCORES = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
HAND_SAME = np.array([True, True, True, False, False, False])


def _pairs_with_cosines(cosines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    angles = np.arccos(cosines)
    a = np.stack([np.ones_like(angles), np.zeros_like(angles)], axis=1) * 3.0  # norms do not matter
    b = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 0.5
    return a, b


def test_hand_worked_example() -> None:
    a, b = _pairs_with_cosines(HAND_SCORES)
    np.testing.assert_allclose(cosine_scores(a, b), HAND_SCORES, atol=1e-12)
    # threshold 0.2 accepts 0.9, 0.8, 0.3, 0.7 -> 3 true accepts + 2 true rejects = 5/6; 0.7 also: 5/6 (lowest wins)
    accuracy, threshold = best_threshold_accuracy(HAND_SCORES, HAND_SAME)
    assert accuracy == pytest.approx(5 / 6) and threshold == pytest.approx(0.2)
    fpr, tpr, thresholds = roc_curve(HAND_SCORES, HAND_SAME)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert thresholds[0] == 0.9 and thresholds[-1] < 0.1
    assert roc_auc(fpr, tpr) == pytest.approx(8 / 9)  # 8 of the 9 (same, different) pairs are ordered correctly
    assert equal_error_rate(fpr, tpr) == pytest.approx(1 / 3)  # at threshold 0.3: FAR 1/3, FRR 1/3
    assert threshold_at_far(HAND_SCORES, HAND_SAME, 1 / 3) == (pytest.approx(0.2), 0.0)  # one false accept allowed
    assert threshold_at_far(HAND_SCORES, HAND_SAME, 0.1) == (pytest.approx(0.7), pytest.approx(1 / 3))
    assert tar_at_far(HAND_SCORES, HAND_SAME) == dict.fromkeys(["1e-1", "1e-2", "1e-3", "1e-4", "1e-5", "1e-6"])
    metrics = verification_metrics(a, b, HAND_SAME)
    assert metrics["accuracy_10fold_mean"] is None and metrics["accuracy_10fold_std"] is None  # fewer than 10 pairs
    assert metrics["auc"] == pytest.approx(8 / 9) and metrics["eer"] == pytest.approx(1 / 3)


def test_interpolated_eer() -> None:
    # same 0.9, 0.4; different 0.6, 0.1: ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1); FAR = FRR = 0.5 at (.5,.5)
    scores, same = np.array([0.9, 0.4, 0.6, 0.1]), np.array([True, True, False, False])
    fpr, tpr, _ = roc_curve(scores, same)
    assert equal_error_rate(fpr, tpr) == pytest.approx(0.5)
    # a crossing inside a segment: points (0, 0.25) -> (1, 1) cross FAR = 1 - TAR at x = 0.75 / 1.75
    assert equal_error_rate(np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.25, 1.0])) == pytest.approx(0.75 / 1.75)


def test_kfold_splits_aresklearn_kfold() -> None:
    folds = kfold_splits(23, 10)
    assert [len(f) for f in folds] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    np.testing.assert_array_equal(np.concatenate(folds), np.arange(23))
    for mine, (_, reference) in zip(folds, sklearn_kfold(23, 10)):
        np.testing.assert_array_equal(mine, reference)
    with pytest.raises(GhostFaceNetsError):
        kfold_splits(9, 10)


@pytest.mark.parametrize("n_pairs, dim, seed, noise", [(600, 16, 0, 1.2), (613, 8, 1, 2.0), (240, 4, 2, 0.3)])
def test_kfold_reproduces_insightface(n_pairs: int, dim: int, seed: int, noise: float) -> None:
    a, b, issame = _synthetic_pairs(n_pairs, dim, seed, noise)
    interleaved = np.empty((2 * n_pairs, dim), np.float32)
    interleaved[0::2], interleaved[1::2] = a, b
    mean, std = insightface_evaluate(interleaved, issame)
    metrics = verification_metrics(a, b, issame)
    assert metrics["accuracy_10fold_mean"] == pytest.approx(mean, abs=1e-12)
    assert metrics["accuracy_10fold_std"] == pytest.approx(std, abs=1e-12)
    assert 0.55 < mean < 0.999  # a discriminating but imperfect set, so the threshold choice matters


def test_kfold_first_best_threshold_on_ties() -> None:
    # every distance is 0 or 4: all thresholds in (0, 4] give the same accuracy; the first best (0.01) is chosen
    n = 20
    issame = np.arange(n) % 2 == 0
    a = np.tile([1.0, 0.0], (n, 1))
    b = np.where(issame[:, None], a, -a)
    accuracies, thresholds = kfold_accuracy(a, b, issame)
    assert np.all(accuracies == 1.0) and np.allclose(thresholds, 0.01)


def test_predefined_fold_ids() -> None:
    a, b, issame = _synthetic_pairs(300, 8, 3, 1.5)
    fold_ids = np.repeat(np.arange(5), 60)[np.random.default_rng(3).permutation(300)]
    accuracies, _ = kfold_accuracy(a, b, issame, fold_ids=fold_ids)
    dist = np.sum((a / np.linalg.norm(a, axis=1, keepdims=True) - b / np.linalg.norm(b, axis=1, keepdims=True)) ** 2, 1)
    thresholds = np.arange(0, 4, 0.01)
    for fold, accuracy in zip(range(5), accuracies):
        test, train = fold_ids == fold, fold_ids != fold
        train_acc = [np.mean((dist[train] < t) == issame[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        assert accuracy == pytest.approx(np.mean((dist[test] < best) == issame[test]))
    metrics = verification_metrics(a, b, issame, fold_ids=fold_ids)
    assert metrics["accuracy_10fold_mean"] == pytest.approx(np.mean(accuracies))


@pytest.mark.parametrize("seed", range(4))
def test_best_threshold_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    same = rng.random(300) < 0.4
    scores = np.round(np.where(same, rng.normal(0.5, 0.2, 300), rng.normal(0.1, 0.2, 300)), 2)  # many ties
    accuracy, threshold = best_threshold_accuracy(scores, same)
    reference_accuracy, reference_threshold = brute_best_threshold(scores, same)
    assert accuracy == pytest.approx(reference_accuracy)
    if reference_threshold >= scores.min():
        assert threshold == pytest.approx(reference_threshold)
    assert np.mean((scores > threshold) == same) == pytest.approx(accuracy)


@pytest.mark.parametrize("seed", range(3))
def test_auc_is_the_mann_whitney_statistic(seed: int) -> None:
    rng = np.random.default_rng(seed)
    same = rng.random(200) < 0.5
    scores = np.round(np.where(same, rng.normal(0.3, 0.3, 200), rng.normal(0.0, 0.3, 200)), 1)  # ties
    pos, neg = scores[same], scores[~same]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    fpr, tpr, _ = roc_curve(scores, same)
    assert roc_auc(fpr, tpr) == pytest.approx(wins / (pos.size * neg.size))


@pytest.mark.parametrize("seed", range(3))
def test_tar_at_far_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    same = np.r_[np.ones(500, bool), np.zeros(2000, bool)]
    scores = np.round(np.where(same, rng.normal(0.5, 0.25, 2500), rng.normal(0.0, 0.2, 2500)), 3)
    result = tar_at_far(scores, same)
    assert result["1e-4"] is None and result["1e-5"] is None  # 2000 different pairs: FAR 1e-4 not measurable
    for key in ("1e-1", "1e-2", "1e-3"):
        assert result[key] == pytest.approx(brute_tar(scores, same, float(key)))
    threshold, frr = threshold_at_far(scores, same, 1e-2)
    assert np.mean(scores[~same] > threshold) <= 1e-2 < np.mean(scores[~same] >= threshold)
    assert frr == pytest.approx(np.mean(scores[same] <= threshold))


def test_verification_metrics_keys_and_degenerate_sets() -> None:
    a, b, issame = _synthetic_pairs(50, 4, 5)
    metrics = verification_metrics(a, b, issame)
    assert list(metrics) == [
        "pairs",
        "accuracy_10fold_mean",
        "accuracy_10fold_std",
        "best_threshold_accuracy",
        "best_threshold",
        "auc",
        "eer",
        "tar_at_far",
    ]
    assert list(metrics["tar_at_far"]) == ["1e-1", "1e-2", "1e-3", "1e-4", "1e-5", "1e-6"]
    only_same = verification_metrics(a, b, np.ones(50, bool))
    assert only_same["auc"] is None and only_same["eer"] is None and only_same["best_threshold_accuracy"] == 1.0
    zero = verification_metrics(np.zeros((12, 3)), np.ones((12, 3)), np.arange(12) % 2 == 0)  # zero embeddings
    assert zero["auc"] == 0.5
    with pytest.raises(GhostFaceNetsError):
        verification_metrics(a, b[:-1], issame)
    with pytest.raises(GhostFaceNetsError):
        threshold_at_far(np.array([0.1, 0.2]), np.array([True, True]), 0.1)
