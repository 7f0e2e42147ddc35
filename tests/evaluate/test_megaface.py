"""MegaFace Challenge 1: the chunked scoring against brute force on random features, and a small test pack written in
insightface's layout, evaluated end to end against a reference computed here from the files and the protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ghostfacenets.cli import main
from ghostfacenets.data.images import ImageError
from ghostfacenets.evaluate.megaface import (
    HISTOGRAM_BINS,
    MegaFaceError,
    distractor_sizes,
    evaluate_megaface,
    merge_best_scores,
    ordered_mates,
    probe_similarities,
    rank_counts,
    read_megaface,
    score_distractors,
)
from ghostfacenets.evaluate.metrics import tar_at_far_of_top
from ghostfacenets.inference import embed_images
from tests.helpers.eval_sets import MEGAFACE_DISTRACTORS, MEGAFACE_IDENTITIES, write_megaface_pack
from tests.helpers.toy_models import pooled_colour_model

SEED = 0
FARS = {"1e-6": 1e-6, "1e-5": 1e-5, "1e-4": 1e-4}


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_tar(genuine: np.ndarray, impostors: np.ndarray, far: float) -> float | None:
    """TAR at the lowest threshold (any impostor score, or under all) whose FAR is at most ``far``."""
    if math.floor(far * impostors.size + 1e-9) < 1:
        return None
    ascending = np.sort(impostors)
    candidates = np.concatenate([[-np.inf], np.unique(ascending[np.isfinite(ascending)])])
    accepted = impostors.size - np.searchsorted(ascending, candidates, side="right")  # impostors above each
    lowest = candidates[np.flatnonzero(accepted <= far * impostors.size + 1e-9)[0]]
    return float(np.mean(genuine > lowest))


def _brute_megaface(probes, labels, distractors, noisy, size, order, max_rank):
    """CMC to ``max_rank`` and TAR at FAR from every score, in float64."""
    chosen = order[:size]
    scores = probes.astype(np.float64) @ distractors[chosen].astype(np.float64).T
    scores[:, noisy[chosen]] = -np.inf
    pp = probes.astype(np.float64) @ probes.astype(np.float64).T
    cmc_hits = np.zeros(max_rank)
    pairs = 0
    genuine = []
    for p in range(len(probes)):
        for g in range(len(probes)):
            if p == g or labels[p] != labels[g]:
                continue
            rank = 1 + int(np.sum(scores[p] > pp[p, g]))
            cmc_hits[rank - 1 :] += rank <= max_rank
            pairs += 1
            if p < g:
                genuine.append(pp[p, g])
    genuine = np.array(genuine)
    return cmc_hits / pairs, {key: _brute_tar(genuine, scores.reshape(-1), far) for key, far in FARS.items()}


def test_chunked_scoring_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(8), 5)
    centres = _unit(rng, 8, 16)
    probes = centres[labels] + 0.35 * _unit(rng, 40, 16)
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    distractors = _unit(rng, 30_000, 16)  # 40 x 30,000 = 1.2 M impostor pairs: FAR 1e-6 is measurable
    noisy = rng.random(len(distractors)) < 0.01
    distractors[noisy] = probes[rng.integers(0, 40, int(noisy.sum()))]  # noise that would match, were it not removed
    order = rng.permutation(len(distractors))
    sizes = distractor_sizes(len(distractors))
    assert sizes == [10, 100, 1_000, 10_000, 30_000]
    scored = score_distractors(probes, distractors, noisy, sizes, order, max_rank=20, chunk_elements=40 * 777)
    probe_scores = probe_similarities(probes)
    mates_p, mates_g = ordered_mates(labels)
    genuine = probe_scores[mates_p[mates_p < mates_g], mates_g[mates_p < mates_g]]
    for result, size in zip(scored, sizes):
        cmc, tar = _brute_megaface(probes, labels, distractors, noisy, size, order, 20)
        counts = rank_counts(result.top_distractor_scores, mates_p, mates_g, probe_scores)
        assert result.distractors == size and result.impostors == 40 * size
        np.testing.assert_allclose([np.mean(counts < k) for k in range(1, 21)], cmc, atol=1e-12)
        got = tar_at_far_of_top(genuine, result.top_impostor_scores, result.impostors, FARS)
        assert got.keys() == tar.keys()
        for key in FARS:
            assert (got[key] is None) == (tar[key] is None), (size, key)
            if tar[key] is not None:
                assert got[key] == pytest.approx(tar[key], abs=1e-12), (size, key)
        assert result.histogram.sum() == 40 * int((~noisy[order[:size]]).sum())  # every finite impostor score
    assert scored[-1].top_impostor_scores.size == math.floor(1e-4 * 40 * 30_000) + 1
    assert tar_at_far_of_top(genuine, scored[-1].top_impostor_scores, 1_200_000, FARS)["1e-6"] is not None


@pytest.mark.parametrize("high_rows", [0, 3, 8])  # no row, some rows, every row with many new high scores
def test_merging_a_block_into_the_kept_best_scores(high_rows: int) -> None:
    rng = np.random.default_rng(high_rows)
    top = -np.sort(-(0.45 + 0.55 * rng.random((8, 20))), axis=1)  # each row's 20 best so far, descending
    block = rng.random((8, 50)) * 0.5
    block[:high_rows] += 0.6  # these rows get more than 16 scores above their current 20th
    merged = merge_best_scores(torch.from_numpy(top), torch.from_numpy(block), first=16).numpy()
    expected = -np.sort(-np.concatenate([top, block], axis=1), axis=1)[:, :20]
    np.testing.assert_array_equal(merged, expected)


def test_block_size_does_not_change_the_result() -> None:
    rng = np.random.default_rng(5)
    probes, distractors = _unit(rng, 12, 8), _unit(rng, 900, 8)
    noisy = np.zeros(900, bool)
    one = score_distractors(probes, distractors, noisy, [100, 900], max_rank=5, chunk_elements=1 << 24)
    many = score_distractors(probes, distractors, noisy, [100, 900], max_rank=5, chunk_elements=12 * 7)
    for a, b in zip(one, many):  # float32 products of other block shapes may differ in the last bit
        np.testing.assert_allclose(a.top_impostor_scores, b.top_impostor_scores, atol=1e-6)
        np.testing.assert_allclose(a.top_distractor_scores, b.top_distractor_scores, atol=1e-6)
        assert a.histogram.sum() == b.histogram.sum() == 12 * a.distractors
        assert np.abs(np.cumsum(a.histogram - b.histogram)).max() <= 2  # a few scores in the neighbouring bin


def _largest_allocation(distractors: int, chunk_elements: int) -> int:
    """The largest single CPU allocation (bytes) torch makes while scoring 50 probes against ``distractors``."""
    from torch.profiler import ProfilerActivity, profile

    rng = np.random.default_rng(2)
    probes, features = _unit(rng, 50, 16), _unit(rng, distractors, 16)
    noisy = rng.random(distractors) < 0.01
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        score_distractors(probes, features, noisy, distractor_sizes(distractors), chunk_elements=chunk_elements)
    return max(event.cpu_memory_usage for event in profiler.events())


def test_scoring_memory_is_bounded_by_the_block_not_the_distractors() -> None:
    block = 50 * 500  # scores per block: 100 kB of float32
    small, large = _largest_allocation(3_000, block), _largest_allocation(12_000, block)
    # nothing larger than a block of scores, its mask and the fixed histogram is ever allocated, at any size
    assert small == large <= max(4 * block, 8 * HISTOGRAM_BINS)


# --------------------------------------------------------------------------------------------- a small test pack
@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_megaface_pack(tmp_path_factory.mktemp("megaface"))


def _reference(pack: Path, refined: bool, max_rank: int = 10) -> dict:
    """The protocol written out: read the files, embed (flip sum), normalise, replace noise, brute-force scores."""
    base = pack / "data"
    fs = (base / "facescrub_lst").read_text().split()
    mf = (base / "megaface_lst").read_text().split()
    read = [cv2.imread(str(base / "facescrub_images" / e))[..., ::-1] for e in fs]
    read += [cv2.imread(str(base / "megaface_images" / e))[..., ::-1] for e in mf]
    features = embed_images(pooled_colour_model(), np.stack(read), flip=True, progress=False).astype(np.float64)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    probes, distractors = features[: len(fs)], features[len(fs) :]
    labels = np.array([MEGAFACE_IDENTITIES.index(e.split("/")[0]) for e in fs])
    noisy_probe = np.array([refined and e.endswith("Aaron_Eckhart_3.png") for e in fs])
    noisy = np.array([refined and i == 12 for i in range(len(mf))])
    jitter = np.random.default_rng(SEED).uniform(-0.001, 0.001, (int(noisy_probe.sum()), probes.shape[1]))
    for row, noise in zip(np.flatnonzero(noisy_probe), jitter):
        centre = probes[(labels == labels[row]) & ~noisy_probe].sum(axis=0) + noise
        probes[row] = centre / np.linalg.norm(centre)
    order = np.random.default_rng(SEED).permutation(len(mf))
    sizes = [10, 100, MEGAFACE_DISTRACTORS]
    out = {}
    for size in sizes:
        cmc, tar = _brute_megaface(probes, labels, distractors, noisy, size, order, max_rank)
        out[size] = (cmc, tar)
    return out


@pytest.mark.parametrize("refined", [True, False])
def test_test_pack_end_to_end_matches_the_protocol(pack: Path, refined: bool) -> None:
    result = evaluate_megaface(
        pooled_colour_model(), pack, progress=False, refined=refined, seed=SEED, max_rank=10, device="cpu"
    )
    metrics = result.metrics
    assert (
        metrics["probes"] == 20 and metrics["probe_identities"] == 5 and metrics["distractors"] == MEGAFACE_DISTRACTORS
    )
    assert metrics["probe_gallery_pairs"] == 5 * 4 * 3 and metrics["genuine_pairs"] == 5 * 6
    assert (metrics["noisy_probes"], metrics["noisy_distractors"], metrics["refined"]) == (
        (1, 1, True) if refined else (0, 0, False)
    )
    assert list(metrics["sizes"]) == ["10", "100", str(MEGAFACE_DISTRACTORS)]
    for size, (cmc, tar) in _reference(pack, refined).items():
        got = metrics["sizes"][str(size)]
        assert got["distractors"] == size and got["impostor_pairs"] == 20 * size
        np.testing.assert_allclose(got["cmc"], cmc, atol=1e-9)
        assert got["rank1"] == pytest.approx(cmc[0])
        assert got["tar_at_far"].keys() == tar.keys()
        for key, value in tar.items():
            assert got["tar_at_far"][key] == (None if value is None else pytest.approx(value)), (size, key)
    assert metrics["rank1"] == metrics["sizes"][str(MEGAFACE_DISTRACTORS)]["rank1"]
    far, tar = result.roc[MEGAFACE_DISTRACTORS]
    assert far[0] == pytest.approx(1 / (20 * MEGAFACE_DISTRACTORS)) and far[-1] == pytest.approx(1.0) and tar[-1] == 1.0
    assert np.all(np.diff(tar) >= 0)


def test_noise_removal_changes_what_it_should(pack: Path) -> None:
    refined = evaluate_megaface(pooled_colour_model(), pack, progress=False, max_rank=10).metrics
    raw = evaluate_megaface(pooled_colour_model(), pack, progress=False, max_rank=10, refined=False).metrics
    # the Carla Gallo distractor outranks some of her mates (rank-1 drops), and Aaron Eckhart's mislabelled image
    # misses his mates, unless both are removed as listed
    assert refined["rank1"] > raw["rank1"]
    assert refined["sizes"]["150"]["cmc"][0] == 1.0


def test_layout_and_lists(pack: Path, tmp_path: Path) -> None:
    megaface = read_megaface(pack)
    assert megaface.layout.root == pack and megaface.identities == MEGAFACE_IDENTITIES
    assert megaface.probe_noisy.sum() == 1 and megaface.distractor_noisy.tolist().index(True) == 12
    assert megaface.job.count == 20 + MEGAFACE_DISTRACTORS
    flat = write_megaface_pack(tmp_path / "flat", data_folder=False)  # the files directly in the folder
    assert len(read_megaface(flat).probe_paths) == 20


def _broken_pack(tmp_path: Path) -> Path:
    return write_megaface_pack(tmp_path / "pack")


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (lambda b: (b / "megaface_noises.txt").unlink(), MegaFaceError, "no-megaface-refined"),
        (lambda b: (b / "facescrub_lst").write_text("Aaron_Eckhart/x.png\n/etc/passwd\n"), MegaFaceError, ":2:"),
        (lambda b: (b / "megaface_lst").write_text("000/../../x.jpg\n"), MegaFaceError, "relative path"),
        (lambda b: (b / "megaface_lst").write_text(""), MegaFaceError, "no images listed"),
        (lambda b: (b / "megaface_images" / "000" / "x0@N00" / "0_0.jpg").unlink(), ImageError, "absent"),
        (
            lambda b: (b / "facescrub_noises.txt").write_text("\n".join(f"Ben_Affleck_{k}.png" for k in range(4))),
            MegaFaceError,
            "every image of Ben_Affleck",
        ),
    ],
)
def test_damaged_packs_fail_before_embedding(tmp_path: Path, edit, error, message: str) -> None:
    root = _broken_pack(tmp_path)
    edit(root / "data")
    with pytest.raises(error, match=message):
        read_megaface(root)


def test_cli_megaface(pack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers.toy_models import pooled_colour_onnx

    model = pooled_colour_onnx(tmp_path / "pooled.onnx")
    out, plot = tmp_path / "r.json", tmp_path / "fig.png"
    assert (
        main(["evaluate", "--model", str(model), "--megaface", str(pack), "--json", str(out), "--plot", str(plot)]) == 0
    )
    printed = capsys.readouterr().out
    assert "MegaFace: 20 probes of 5 identities, 150 distractors" in printed and "TAR@FAR=1e-6 %" in printed
    result = json.loads(out.read_text())["sets"]["MegaFace"]
    reference = evaluate_megaface(model, pack, progress=False).metrics
    assert result == json.loads(json.dumps(reference))
    assert len(result["sizes"]["150"]["cmc"]) == 100
    assert (tmp_path / "fig-MegaFace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not plot.exists()
