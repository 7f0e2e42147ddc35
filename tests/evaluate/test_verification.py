"""evaluate_bin against an independent computation on the same images, with and without repeated images."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from ghostfacenets.data.verification_bin import load_verification_bin, write_verification_bin
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.evaluate.verification import bin_files, evaluate_bin, evaluate_bin_detailed
from tests.helpers import shared_path
from tests.helpers.eval_sets import write_synthetic_bin
from tests.helpers.references import brute_best_threshold, brute_tar, insightface_evaluate
from tests.helpers.toy_models import pooled_colour_model


def _independent_embeddings(images: np.ndarray, flip: bool) -> np.ndarray:
    x = torch.from_numpy(((images.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2).copy())
    out = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
    if flip:
        out = out + nn.functional.adaptive_avg_pool2d(x.flip(3), 4).flatten(1)
    return out.numpy().astype(np.float64)


def _check_against_definitions(metrics: dict, embeddings: np.ndarray, issame: np.ndarray, tol: float = 1e-9) -> None:
    a, b = embeddings[0::2], embeddings[1::2]
    scores = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    accuracy, threshold = brute_best_threshold(scores, issame)
    assert metrics["pairs"] == len(issame)
    assert metrics["best_threshold_accuracy"] == pytest.approx(accuracy)
    assert metrics["best_threshold"] == pytest.approx(threshold, abs=tol)
    if len(issame) >= 10:
        mean, std = insightface_evaluate(embeddings, issame)
        assert metrics["accuracy_10fold_mean"] == pytest.approx(mean)
        assert metrics["accuracy_10fold_std"] == pytest.approx(std)
    for key, value in metrics["tar_at_far"].items():
        if value is not None:
            assert value == pytest.approx(brute_tar(scores, issame, float(key)))


@pytest.mark.parametrize("flip", [True, False])
def test_evaluate_bin_on_the_genuine_sample(flip: bool) -> None:
    path = shared_path("fixtures", "formats", "bin_sample", "sample_py2.bin")
    metrics = evaluate_bin(pooled_colour_model(), path, flip=flip, progress=False)
    images, issame = load_verification_bin(path)
    _check_against_definitions(metrics, _independent_embeddings(images, flip), issame)
    assert metrics["flip"] is flip and metrics["accuracy_10fold_mean"] is None  # 8 pairs: no 10 folds


def test_repeated_images_are_embedded_once_with_the_same_result(tmp_path: Path) -> None:
    raw = pickle.loads(shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin").read_bytes())[0]
    rng = np.random.default_rng(0)
    identity = np.arange(16) // 2  # rough labels: the sample's pairs; same pair -> same label
    picks = rng.integers(0, 16, size=(60, 2))
    issame = identity[picks[:, 0]] == identity[picks[:, 1]]
    path = write_verification_bin(tmp_path / "repeats.bin", [raw[i] for i in picks.reshape(-1)], issame)
    seen = []

    class Counting(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(len(x))
            return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    result = evaluate_bin_detailed(Counting(), path, flip=False, batch_size=256, progress=False)
    assert sum(seen) == len(np.unique(picks))  # 120 images in the file, each distinct one embedded once
    images, labels = load_verification_bin(path)
    _check_against_definitions(result.metrics, _independent_embeddings(images, False), labels)
    assert result.scores.shape == (60,) and result.name == "repeats"


def test_evaluate_bin_with_a_real_ghostfacenet_and_jpeg_bin(tmp_path: Path) -> None:
    """A GhostFaceNet (Keras reference weights) on ORL faces: the pipeline agrees with a direct forward pass."""
    from ghostfacenets import load_model

    model = load_model(shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5"))
    faces = shared_path("data", "att_faces")
    crops = []
    for subject in range(1, 7):
        for k in (1, 2):
            grey = cv2.imread(str(faces / f"s{subject}" / f"{k}.pgm"), cv2.IMREAD_GRAYSCALE)
            crops.append(np.repeat(cv2.copyMakeBorder(grey, 0, 0, 10, 10, cv2.BORDER_CONSTANT)[..., None], 3, 2))
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (0, 2), (1, 4), (3, 6), (5, 8), (7, 10), (9, 0)]
    images = [crops[i] for p in pairs for i in p]
    issame = [a // 2 == b // 2 for a, b in pairs]
    path = write_verification_bin(tmp_path / "orl.bin", images, issame, image_format=".jpg")
    metrics = evaluate_bin(model, path, progress=False)
    decoded, labels = load_verification_bin(path)
    with torch.no_grad():
        x = torch.from_numpy(((decoded.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2).copy())
        embeddings = (model(x) + model(x.flip(3))).double().numpy()
    _check_against_definitions(metrics, embeddings, labels, tol=1e-5)  # float32 forward passes


def _clustered_embeddings(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, max(n // 5, 2), n)
    centres = rng.normal(size=(labels.max() + 1, dim))
    return (centres[labels] + 1.3 * rng.normal(size=(n, dim))).astype(np.float32), labels


def test_pairs_of_row_indices_give_the_metrics_of_the_gathered_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    from ghostfacenets.evaluate import metrics as metrics_module
    from ghostfacenets.evaluate.metrics import cosine_scores, verification_metrics
    from ghostfacenets.evaluate.pairs import make_pairs
    from ghostfacenets.evaluate.verification import evaluate_embedded_pairs

    embeddings, labels = _clustered_embeddings(90, 12, 0)
    embeddings[7] = 0  # an all-zero embedding stays zero (cosine 0 to everything)
    pairs, issame = make_pairs(labels, seed=4)
    monkeypatch.setattr(metrics_module, "PAIR_CHUNK_ELEMENTS", 12 * 37)  # 37 pairs a chunk: many boundaries
    result = evaluate_embedded_pairs("set", embeddings, pairs, issame, flip=False)
    a, b = embeddings[pairs[:, 0]], embeddings[pairs[:, 1]]
    expected = verification_metrics(a, b, issame) | {"flip": False}
    assert result.metrics.pop("tar_at_far") == pytest.approx(expected.pop("tar_at_far"))
    assert result.metrics == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(result.scores, cosine_scores(a, b), atol=1e-12)
    assert 0.6 < expected["accuracy_10fold_mean"] < 0.99


def test_pair_memory_does_not_grow_with_the_embedding_size() -> None:
    """Scores come from the N embeddings by row index, a chunk at a time: no (P, D) pair arrays (16 KB a pair at
    D = 512 before), so millions of exhaustive folder pairs fit in memory."""
    import tracemalloc

    from ghostfacenets.evaluate.pairs import make_pairs
    from ghostfacenets.evaluate.verification import evaluate_embedded_pairs

    embeddings, labels = _clustered_embeddings(400, 512, 1)
    pairs, issame = make_pairs(labels)  # 79,800 pairs
    tracemalloc.start()
    try:
        result = evaluate_embedded_pairs("set", embeddings, pairs, issame, flip=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.metrics["pairs"] == len(pairs) == 79_800
    fixed = 48 * 2**20 + 8 * embeddings.size  # chunk buffers (5 x 8 MiB) and one float64 copy of the embeddings
    assert peak < fixed + 200 * len(pairs), f"{peak / 2**20:.0f} MiB"  # before: 1.2 GiB


def test_bin_dir_lists_the_paper_sets_in_the_paper_order(tmp_path: Path) -> None:
    for name in ("zz_custom", "agedb_30", "lfw", "cfp_fp", "CPLFW"):
        write_synthetic_bin(tmp_path / f"{name}.bin", 0)
    (tmp_path / "notes.txt").write_text("not a set")
    assert [p.name for p in bin_files(tmp_path)] == [
        "lfw.bin",
        "cfp_fp.bin",
        "CPLFW.bin",
        "agedb_30.bin",
        "zz_custom.bin",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(GhostFaceNetsError, match="no .bin files"):
        bin_files(tmp_path / "empty")
    with pytest.raises(GhostFaceNetsError, match="not a folder"):
        bin_files(tmp_path / "notes.txt")
