"""Pairs from identity folders: exhaustive and seeded sampling, make_bin and folder evaluation."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from ghostfacenets import create_model
from ghostfacenets.data.images import ImageError
from ghostfacenets.data.verification_bin import load_verification_bin, read_verification_bin
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.evaluate.pairs import evaluate_folder, make_bin, make_pairs
from ghostfacenets.evaluate.verification import evaluate_bin
from tests.helpers.photos import orl_folder
from tests.helpers.toy_models import pooled_colour_model

LABELS = np.repeat(np.arange(5), [4, 1, 3, 6, 2])  # 16 images, one identity with a single image


def test_exhaustive_pairs_are_every_pair_once() -> None:
    pairs, issame = make_pairs(LABELS)
    expected = set(itertools.combinations(range(16), 2))
    assert len(pairs) == len(expected) == 120 and {tuple(p) for p in pairs.tolist()} == expected
    np.testing.assert_array_equal(issame, LABELS[pairs[:, 0]] == LABELS[pairs[:, 1]])
    assert issame.sum() == sum(n * (n - 1) // 2 for n in (4, 1, 3, 6, 2))
    first_fold = issame[: len(issame) // 10]
    assert first_fold.any() and not first_fold.all()  # shuffled: contiguous folds mix same and different


@pytest.mark.parametrize("seed", [0, 7])
def test_sampled_pairs(seed: int) -> None:
    labels = np.repeat(np.arange(40), 10)
    pairs, issame = make_pairs(labels, num_pairs=301, seed=seed)
    assert len(pairs) == 301 and issame.sum() == 151
    assert len({tuple(p) for p in pairs.tolist()}) == 301 and np.all(pairs[:, 0] < pairs[:, 1])
    np.testing.assert_array_equal(issame, labels[pairs[:, 0]] == labels[pairs[:, 1]])
    again, _ = make_pairs(labels, num_pairs=301, seed=seed)
    np.testing.assert_array_equal(pairs, again)
    other, _ = make_pairs(labels, num_pairs=301, seed=seed + 1)
    assert not np.array_equal(pairs, other)


def test_sampling_takes_what_exists() -> None:
    pairs, issame = make_pairs(LABELS, num_pairs=100)  # 6 + 0 + 3 + 15 + 1 = 25 same pairs exist, 95 different
    assert issame.sum() == 25 and (~issame).sum() == 50
    pairs, issame = make_pairs(LABELS, num_pairs=20)
    assert issame.sum() == 10 and (~issame).sum() == 10
    pairs, issame = make_pairs(LABELS, num_pairs=1000)
    assert len(pairs) == 120
    with pytest.raises(GhostFaceNetsError):
        make_pairs([0])


def test_make_bin_stores_the_right_images_and_labels(tmp_path: Path) -> None:
    folder = orl_folder(tmp_path / "faces")
    path, pairs, same = make_bin(folder, tmp_path / "orl.bin", num_pairs=40, seed=3)
    assert (pairs, same) == (40, 20)
    encoded, issame = read_verification_bin(path)
    originals = {p.read_bytes(): p.parent.name for p in sorted(folder.glob("*/*.png"))}
    owners = [originals[data] for data in encoded]  # every stored image is a file of the folder, byte for byte
    assert issame.tolist() == [owners[2 * i] == owners[2 * i + 1] for i in range(40)]
    images, _ = load_verification_bin(path)
    assert images.shape == (80, 112, 112, 3)


def test_folder_evaluation_equals_evaluating_its_bin(tmp_path: Path) -> None:
    folder = orl_folder(tmp_path / "faces")
    bin_path, _, _ = make_bin(folder, tmp_path / "orl.bin", seed=1)  # exhaustive: 276 pairs
    model = pooled_colour_model()
    from_bin = evaluate_bin(model, bin_path, progress=False)
    from_folder = evaluate_folder(model, folder, seed=1, progress=False)
    assert from_folder.name == "faces" and from_folder.metrics["pairs"] == 276
    for key, value in from_bin.items():
        if isinstance(value, float):
            assert from_folder.metrics[key] == pytest.approx(value, abs=1e-9), key
        else:
            assert from_folder.metrics[key] == value, key


def test_folders_with_unaligned_or_mixed_sizes_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        cv2.imwrite(str(folder / name / "1.png"), np.zeros((112, 92), np.uint8))
    with pytest.raises(ImageError, match="align the faces first"):
        make_bin(folder, tmp_path / "x.bin")
    _path, pairs, _ = make_bin(folder, tmp_path / "x.bin", size=None)
    assert pairs == 1
    cv2.imwrite(str(folder / "b" / "2.png"), np.zeros((64, 64), np.uint8))
    with pytest.raises(ImageError, match="different sizes"):
        make_bin(folder, tmp_path / "y.bin", size=None)
    with pytest.raises(ImageError, match="112x112"):
        evaluate_folder(create_model("ghostfacenetv1-0.5-2", embedding_size=32), folder, progress=False)


def test_folder_given_as_dot_is_named_after_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = orl_folder(tmp_path / "faces", subjects=3, per_subject=2)
    monkeypatch.chdir(folder)
    assert evaluate_folder(pooled_colour_model(), ".", progress=False).name == "faces"
    monkeypatch.chdir(folder / "person01")
    assert evaluate_folder(pooled_colour_model(), "..", progress=False).name == "faces"
