"""Verification metrics, each named for what it is.

Conventions: scores are cosine similarities of L2-normalised embeddings; a pair is accepted as the same person when
its score is **greater than** the threshold. FAR = accepted different pairs / different pairs; TAR = accepted same
pairs / same pairs; FRR = 1 - TAR.

* ``accuracy_10fold_*``: insightface ``verification.py`` exactly (``calculate_roc``, ``nrof_folds=10``): squared L2
  distance of the normalised embeddings, thresholds ``np.arange(0, 4, 0.01)``, a pair is "same" when the distance is
  below the threshold, 10 contiguous folds as sklearn's ``KFold(10, shuffle=False)``, the threshold of each test fold
  is the first best one on the other nine folds; mean and (population) standard deviation over folds.
* ``best_threshold_accuracy``: the best accuracy any single cosine threshold reaches on the whole set, by an exact
  sweep over every distinct score (what the official ``evals.py`` approximates); optimistic, reported for
  comparison with the paper. ``best_threshold`` is the lowest threshold that reaches it.
* ``auc``: area under the ROC curve (ties count one half); ``eer``: the rate where FAR = FRR on the ROC curve
  with linear interpolation between its points.
* ``tar_at_far``: TAR at the lowest threshold whose FAR does not exceed the target; null where the set has fewer
  than 1/FAR different pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import GhostFaceNetsError

FAR_TARGETS = {"1e-1": 1e-1, "1e-2": 1e-2, "1e-3": 1e-3, "1e-4": 1e-4, "1e-5": 1e-5, "1e-6": 1e-6}
INSIGHTFACE_THRESHOLDS = np.arange(0, 4, 0.01)
DEFAULT_FOLDS = 10
PAIR_CHUNK_ELEMENTS = 1 << 20  # pair rows gathered at a time x D: 8 MiB of float64 per gathered side


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, in float64; all-zero rows stay zero."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _check_pairs(embeddings_a: np.ndarray, embeddings_b: np.ndarray, issame: Any) -> np.ndarray:
    a, b = np.asarray(embeddings_a), np.asarray(embeddings_b)
    labels = np.asarray(issame, dtype=bool).reshape(-1)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] != labels.shape[0]:
        raise GhostFaceNetsError(
            f"expected two embedding arrays (P, D) and P labels, got {a.shape}, {b.shape}, {labels.shape}"
        )
    return labels


def cosine_scores(embeddings_a: np.ndarray, embeddings_b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair of rows (float64)."""
    return np.sum(l2_normalize(embeddings_a) * l2_normalize(embeddings_b), axis=-1)


def pair_scores(embeddings: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cosine scores, squared L2 distances of the normalised embeddings), float64 (P,), of pairs (P, 2) of row
    indices into ``embeddings`` (N, D). Each embedding is normalised once and the pairs are gathered a chunk at a
    time, so memory grows with N x D + P, not P x D."""
    normalized = l2_normalize(embeddings)
    pairs = np.asarray(pairs).reshape(-1, 2)
    if (
        normalized.ndim != 2
        or not np.issubdtype(pairs.dtype, np.integer)
        or (pairs.size and (pairs.min() < 0 or pairs.max() >= len(normalized)))
    ):
        raise GhostFaceNetsError(
            f"expected embeddings (N, D) and pairs (P, 2) of row indices below N, got "
            f"{normalized.shape} and {pairs.dtype} {pairs.shape}"
        )
    scores, distances = np.empty(len(pairs)), np.empty(len(pairs))
    step = max(1, PAIR_CHUNK_ELEMENTS // max(normalized.shape[1], 1))
    for start in range(0, len(pairs), step):
        chunk = slice(start, start + step)
        a, b = normalized[pairs[chunk, 0]], normalized[pairs[chunk, 1]]
        scores[chunk] = np.sum(a * b, axis=-1)
        distances[chunk] = np.sum(np.square(a - b), axis=1)
    return scores, distances


def _stacked(
    embeddings_a: np.ndarray, embeddings_b: np.ndarray, issame: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two (P, D) arrays as one (2P, D) array, the (P, 2) row indices of their pairs, and the P labels."""
    labels = _check_pairs(embeddings_a, embeddings_b, issame)
    index = np.arange(labels.size)
    return np.concatenate([embeddings_a, embeddings_b]), np.stack([index, index + labels.size], axis=1), labels


def kfold_splits(n: int, n_folds: int = DEFAULT_FOLDS) -> list[np.ndarray]:
    """Test-fold indices of sklearn's ``KFold(n_folds, shuffle=False)``: contiguous, the first n % k one larger."""
    if n < n_folds:
        raise GhostFaceNetsError(f"{n} pairs cannot be split into {n_folds} folds")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(n_folds)]


def _accuracies_below(distances: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Accuracy of "same iff distance < t" for every t (what insightface's calculate_accuracy computes)."""
    same = np.sort(distances[issame])
    diff = np.sort(distances[~issame])
    true_accepts = np.searchsorted(same, thresholds, side="left")
    true_rejects = diff.size - np.searchsorted(diff, thresholds, side="left")
    return (true_accepts + true_rejects) / distances.size


def kfold_accuracy(
    embeddings_a: np.ndarray,
    embeddings_b: np.ndarray,
    issame: Any,
    n_folds: int = DEFAULT_FOLDS,
    fold_ids: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold test accuracies and chosen distance thresholds, as insightface's ``calculate_roc``.

    ``fold_ids`` (one integer per pair) replaces the contiguous folds by predefined ones (e.g. LFW's ten folds).
    """
    embeddings, pairs, labels = _stacked(embeddings_a, embeddings_b, issame)
    return kfold_accuracy_of_distances(pair_scores(embeddings, pairs)[1], labels, n_folds, fold_ids)


def kfold_accuracy_of_distances(
    distances: np.ndarray, labels: np.ndarray, n_folds: int = DEFAULT_FOLDS, fold_ids: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kfold_accuracy` from the squared L2 distances of the normalised pairs and their labels."""
    if fold_ids is None:
        folds = kfold_splits(labels.size, n_folds)
    else:
        ids = np.asarray(fold_ids).reshape(-1)
        if ids.shape[0] != labels.size:
            raise GhostFaceNetsError(f"{ids.shape[0]} fold ids for {labels.size} pairs")
        folds = [np.flatnonzero(ids == f) for f in np.unique(ids)]
        if len(folds) < 2:
            raise GhostFaceNetsError("fold ids must name at least two folds")
    accuracies, thresholds = [], []
    for test in folds:
        train = np.ones(labels.size, dtype=bool)
        train[test] = False
        best = int(np.argmax(_accuracies_below(distances[train], labels[train], INSIGHTFACE_THRESHOLDS)))
        threshold = INSIGHTFACE_THRESHOLDS[best]
        accuracies.append(_accuracies_below(distances[test], labels[test], np.array([threshold]))[0])
        thresholds.append(threshold)
    return np.array(accuracies), np.array(thresholds)


def _below_all(scores: np.ndarray) -> float:
    """A threshold under every score: accepts all pairs."""
    return float(np.nextafter(np.min(scores), -np.inf)) if scores.size else -1.0


def best_threshold_accuracy(scores: Any, issame: Any) -> tuple[float, float]:
    """(accuracy, threshold): the best accuracy of "same iff score > threshold" over every possible threshold.

    Exact: every distinct score is tried, plus a threshold under all scores; on ties the lowest threshold wins.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(issame, dtype=bool).reshape(-1)
    if scores.size == 0 or scores.shape != labels.shape:
        raise GhostFaceNetsError(
            f"expected as many labels as scores (at least one), got {scores.shape}, {labels.shape}"
        )
    candidates = np.concatenate([[_below_all(scores)], np.unique(scores)])
    same = np.sort(scores[labels])
    diff = np.sort(scores[~labels])
    true_accepts = same.size - np.searchsorted(same, candidates, side="right")
    true_rejects = np.searchsorted(diff, candidates, side="right")
    accuracy = (true_accepts + true_rejects) / scores.size
    best = int(np.argmax(accuracy))
    return float(accuracy[best]), float(candidates[best])


def roc_curve(scores: Any, issame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of "same iff score > threshold", thresholds falling from the top score.

    The first point is (0, 0) at the highest score, the last (1, 1) at a threshold under every score; one point per
    distinct score in between.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(issame, dtype=bool).reshape(-1)
    if scores.shape != labels.shape or scores.size == 0:
        raise GhostFaceNetsError(
            f"expected as many labels as scores (at least one), got {scores.shape}, {labels.shape}"
        )
    n_same, n_diff = int(labels.sum()), int((~labels).sum())
    if n_same == 0 or n_diff == 0:
        raise GhostFaceNetsError("a ROC curve needs both same and different pairs")
    thresholds = np.concatenate([np.unique(scores)[::-1], [_below_all(scores)]])
    same = np.sort(scores[labels])
    diff = np.sort(scores[~labels])
    tpr = (n_same - np.searchsorted(same, thresholds, side="right")) / n_same
    fpr = (n_diff - np.searchsorted(diff, thresholds, side="right")) / n_diff
    return fpr, tpr, thresholds


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve given by increasing FPR."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate where FAR equals FRR (= 1 - TAR), linearly interpolated between the points of a ROC curve that
    runs from (0, 0) to (1, 1) as :func:`roc_curve` gives it."""
    gap = fpr - (1.0 - tpr)  # rises from -1 at (0, 0) to +1 at (1, 1), so the first i with gap >= 0 is > 0
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0:
        return float(fpr[i])
    alpha = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(fpr[i - 1] + alpha * (fpr[i] - fpr[i - 1]))


def allowed_false_accepts(n_diff: int, far: float) -> int:
    """How many different pairs may be accepted at FAR ``far``: floor(far x n_diff)."""
    return math.floor(far * n_diff + 1e-9)


def threshold_at_far(scores: Any, issame: Any, far: float) -> tuple[float, float]:
    """(threshold, FRR): the lowest cosine threshold whose FAR on these pairs is at most ``far``, and the FRR there.

    With fewer than 1/far different pairs the threshold is the highest different-pair score (no false accept).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(issame, dtype=bool).reshape(-1)
    if scores.shape != labels.shape:
        raise GhostFaceNetsError(f"expected as many labels as scores, got {scores.shape}, {labels.shape}")
    if not 0 <= far <= 1:
        raise GhostFaceNetsError(f"FAR must be between 0 and 1, got {far}")
    same, diff = scores[labels], np.sort(scores[~labels])[::-1]
    if same.size == 0 or diff.size == 0:
        raise GhostFaceNetsError("calibrating a threshold needs both same and different pairs")
    threshold = far_threshold(diff, diff.size, far)
    if threshold == -math.inf:
        threshold = _below_all(scores)
    return threshold, float(np.mean(same <= threshold))


def far_threshold(descending: np.ndarray, impostors: int, far: float) -> float:
    """The lowest threshold that accepts at most floor(``far`` x ``impostors``) of ``impostors`` impostor scores,
    from the highest of them in descending order (at least that many plus one): the next highest score, or -inf
    when every impostor may be accepted. What :func:`threshold_at_far` computes from all of them."""
    allowed = allowed_false_accepts(impostors, far)
    if allowed >= impostors:
        return -math.inf
    if allowed >= len(descending):
        raise GhostFaceNetsError(f"{len(descending)} highest impostor scores cannot set FAR {far:g} of {impostors}")
    return float(descending[allowed])


def tar_at_far(scores: Any, issame: Any, targets: dict[str, float] = FAR_TARGETS) -> dict[str, float | None]:
    """TAR at each FAR target (keys as ``targets``); None where there are fewer than 1/FAR different pairs."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(issame, dtype=bool).reshape(-1)
    if scores.shape != labels.shape:
        raise GhostFaceNetsError(f"expected as many labels as scores, got {scores.shape}, {labels.shape}")
    impostors = np.sort(scores[~labels])[::-1]
    return tar_at_far_of_top(scores[labels], impostors, impostors.size, targets)


def tar_at_far_of_top(
    genuine: np.ndarray, descending: np.ndarray, impostors: int, targets: dict[str, float] = FAR_TARGETS
) -> dict[str, float | None]:
    """:func:`tar_at_far` from every genuine score and only the highest of ``impostors`` impostor scores (descending;
    for the smallest target at least floor(FAR x impostors) + 1 of them), so that billions of impostor comparisons
    need not be kept."""
    genuine = np.asarray(genuine).reshape(-1)
    result: dict[str, float | None] = {}
    for key, far in targets.items():
        if genuine.size == 0 or allowed_false_accepts(impostors, far) < 1:
            result[key] = None
        else:
            result[key] = 1.0 - float(np.mean(genuine <= far_threshold(descending, impostors, far)))
    return result


def verification_metrics(
    embeddings_a: np.ndarray, embeddings_b: np.ndarray, issame: Any, fold_ids: Any = None
) -> dict[str, Any]:
    """Every verification metric of P pairs of embeddings (P, D), as one JSON-ready dict.

    Keys: ``pairs``, ``accuracy_10fold_mean``, ``accuracy_10fold_std`` (None with fewer than 10 pairs, or the
    k-fold result over ``fold_ids``), ``best_threshold_accuracy``, ``best_threshold`` (cosine), ``auc``, ``eer``
    (None unless both same and different pairs exist) and ``tar_at_far`` (keys "1e-1" .. "1e-6").
    """
    embeddings, pairs, labels = _stacked(embeddings_a, embeddings_b, issame)
    return metrics_of_scores(*pair_scores(embeddings, pairs), labels, fold_ids)


def metrics_of_scores(scores: np.ndarray, distances: np.ndarray, issame: Any, fold_ids: Any = None) -> dict[str, Any]:
    """:func:`verification_metrics` from what :func:`pair_scores` gives (cosine scores and squared L2 distances of
    the normalised pairs) and the labels."""
    labels = np.asarray(issame, dtype=bool).reshape(-1)
    if labels.size == 0:
        raise GhostFaceNetsError("no pairs to evaluate")
    if not scores.shape == distances.shape == labels.shape:
        raise GhostFaceNetsError(
            f"expected as many scores, distances and labels, got {scores.shape}, {distances.shape}, {labels.shape}"
        )
    if fold_ids is not None or labels.size >= DEFAULT_FOLDS:
        accuracies, _ = kfold_accuracy_of_distances(distances, labels, DEFAULT_FOLDS, fold_ids)
        mean: float | None = float(np.mean(accuracies))
        std: float | None = float(np.std(accuracies))
    else:
        mean = std = None
    accuracy, threshold = best_threshold_accuracy(scores, labels)
    if labels.all() or not labels.any():
        auc = eer = None
    else:
        fpr, tpr, _ = roc_curve(scores, labels)
        auc, eer = roc_auc(fpr, tpr), equal_error_rate(fpr, tpr)
    return {
        "pairs": int(labels.size),
        "accuracy_10fold_mean": mean,
        "accuracy_10fold_std": std,
        "best_threshold_accuracy": accuracy,
        "best_threshold": threshold,
        "auc": auc,
        "eer": eer,
        "tar_at_far": tar_at_far(scores, labels),
    }
