"""Independent reference implementations the tests compare against: insightface's verification code written out
(sklearn KFold, calculate_roc) and brute-force metric definitions."""

from __future__ import annotations

import numpy as np


def sklearn_kfold(n: int, n_splits: int):
    indices = np.arange(n)
    fold_sizes = np.full(n_splits, n // n_splits, dtype=int)
    fold_sizes[: n % n_splits] += 1
    current = 0
    for fold_size in fold_sizes:
        start, stop = current, current + fold_size
        test = indices[start:stop]
        yield np.setdiff1d(indices, test), test
        current = stop


def calculate_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    acc = float(tp + tn) / dist.size
    return tpr, fpr, acc


def calculate_roc(thresholds, embeddings1, embeddings2, actual_issame, nrof_folds=10):
    nrof_pairs = min(len(actual_issame), embeddings1.shape[0])
    nrof_thresholds = len(thresholds)
    accuracy = np.zeros(nrof_folds)
    diff = np.subtract(embeddings1, embeddings2)
    dist = np.sum(np.square(diff), 1)
    for fold_idx, (train_set, test_set) in enumerate(sklearn_kfold(nrof_pairs, nrof_folds)):
        acc_train = np.zeros(nrof_thresholds)
        for threshold_idx, threshold in enumerate(thresholds):
            _, _, acc_train[threshold_idx] = calculate_accuracy(threshold, dist[train_set], actual_issame[train_set])
        best_threshold_index = np.argmax(acc_train)
        _, _, accuracy[fold_idx] = calculate_accuracy(
            thresholds[best_threshold_index], dist[test_set], actual_issame[test_set]
        )
    return accuracy


def insightface_evaluate(embeddings: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """insightface test(): sum of flips already done; sklearn.preprocessing.normalize, then evaluate()."""
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    accuracy = calculate_roc(np.arange(0, 4, 0.01), embeddings[0::2], embeddings[1::2], np.asarray(issame))
    return float(np.mean(accuracy)), float(np.std(accuracy))


def brute_best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    best = (-1.0, 0.0)
    for t in sorted(set(scores.tolist()) | {scores.min() - 1.0}):
        accuracy = np.mean((scores > t) == same)
        if accuracy > best[0]:
            best = (accuracy, t)
    return best


def brute_tar(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    neg = scores[~same]
    candidates = sorted(set(scores.tolist()) | {scores.min() - 1.0})
    for t in candidates:  # lowest threshold whose FAR is within the target
        if np.mean(neg > t) <= far + 1e-15:
            return float(np.mean(scores[same] > t))
    raise AssertionError("unreachable: the highest score accepts nothing")
