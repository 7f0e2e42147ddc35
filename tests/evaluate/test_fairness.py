"""Per-group accuracy, its spread, and FMR/FNMR at one global threshold: against the definitions written out here,
and end to end from a pairs file with a group column and from identity folders with a groups file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ghostfacenets.cli import main
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.evaluate.fairness import (
    GroupedPairSet,
    fairness_summary,
    rates_at_threshold,
    read_grouped_folder,
    read_groups_file,
    read_pairs_set,
)
from ghostfacenets.evaluate.metrics import verification_metrics
from ghostfacenets.inference import embed_images
from tests.helpers.eval_sets import write_group_pairs
from tests.helpers.faces import another_image, identity_pattern
from tests.helpers.toy_models import pooled_colour_model, pooled_colour_onnx


def test_fairness_summary_by_hand() -> None:
    summary = fairness_summary({"a": 0.90, "b": 0.95, "c": 0.99})
    assert summary["mean"] == pytest.approx(2.84 / 3)
    assert summary["std"] == pytest.approx(
        np.sqrt(((0.90 - 2.84 / 3) ** 2 + (0.95 - 2.84 / 3) ** 2 + (0.99 - 2.84 / 3) ** 2) / 3)
    )
    assert summary["ser"] == pytest.approx(0.10 / 0.01)
    assert fairness_summary({"a": 0.9, "b": 1.0})["ser"] is None  # no error in one group: the ratio is unbounded
    assert fairness_summary({"a": 0.9, "b": None}) == {"mean": None, "std": None, "ser": None}


def _brute_rates(scores, same, groups, far):
    """The lowest threshold (any score, or under all) whose FAR on all pairs is at most ``far``; rates per group."""
    threshold = min(t for t in [*scores.tolist(), scores.min() - 1] if np.mean(scores[~same] > t) <= far + 1e-12)
    out = {}
    for g in dict.fromkeys(groups.tolist()):
        m = groups == g
        out[g] = {
            "fmr": np.sum((scores > threshold) & ~same & m) / np.sum(~same & m),
            "fnmr": np.sum((scores <= threshold) & same & m) / np.sum(same & m),
            "accuracy": np.mean((scores[m] > threshold) == same[m]),
        }
    return threshold, out


def test_rates_at_one_threshold_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    groups = np.array(["x"] * 300 + ["y"] * 500 + ["z"] * 200)
    same = rng.random(1000) < 0.4
    shift = np.where(groups == "y", 0.08, 0.0)  # group y's impostors score higher: more false matches there
    scores = np.where(same, rng.normal(0.6, 0.15, 1000), rng.normal(0.1, 0.12, 1000) + shift)
    result = rates_at_threshold(scores, same, groups, 0.05)
    threshold, expected = _brute_rates(scores, same, groups, 0.05)
    assert result["threshold"] == pytest.approx(threshold) and result["estimable"]
    assert list(result["groups"]) == ["x", "y", "z"]
    for g, rates in expected.items():
        got = result["groups"][g]
        assert (got["fmr"], got["fnmr"], got["accuracy"]) == pytest.approx(
            (rates["fmr"], rates["fnmr"], rates["accuracy"])
        )
        assert got["pairs"] == np.sum(groups == g) and got["same_pairs"] == np.sum(same & (groups == g))
    fmrs = [r["fmr"] for r in expected.values()]
    assert result["fmr_ratio"] == pytest.approx(max(fmrs) / min(fmrs)) and result["fmr_ratio"] > 2
    assert result["fmr"] == pytest.approx(np.mean(scores[~same] > threshold)) and result["fmr"] <= 0.05
    few = rates_at_threshold(scores[:20], same[:20], groups[:20], 1e-3)
    assert not few["estimable"] and few["groups"]["x"]["fmr"] == 0.0


def test_pairs_file_with_groups_end_to_end(tmp_path: Path) -> None:
    csv = write_group_pairs(tmp_path)
    grouped = read_pairs_set(csv, group_column="region")
    assert isinstance(grouped, GroupedPairSet) and grouped.job.count == 18 and len(grouped.pairs) == 24
    embeddings = embed_images(pooled_colour_model(), grouped.job.load(np.arange(18)), progress=False)
    evaluation = grouped.evaluate(embeddings, far=0.1)
    lines = csv.read_text().splitlines()[1:]
    for region in ("north", "south"):
        rows = [line.split(",") for line in lines if line.split(",")[3] == region]
        a = [cv2.imread(str(tmp_path / r[0]))[..., ::-1] for r in rows]
        b = [cv2.imread(str(tmp_path / r[1]))[..., ::-1] for r in rows]
        ea = embed_images(pooled_colour_model(), np.stack(a), progress=False)
        eb = embed_images(pooled_colour_model(), np.stack(b), progress=False)
        expected = verification_metrics(ea, eb, [r[2] == "1" for r in rows]) | {"flip": True}
        assert evaluation.metrics[region].pop("tar_at_far") == pytest.approx(expected.pop("tar_at_far"))
        assert evaluation.metrics[region] == pytest.approx(expected)
    plain = read_pairs_set(csv)  # without a group column: one set, the first three columns
    assert not isinstance(plain, GroupedPairSet) and len(plain.pairs) == 24


def test_grouped_identity_folder_draws_pairs_within_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for person in ("ann", "bob", "cid", "dee"):
        (tmp_path / "faces" / person).mkdir(parents=True)
        pattern = identity_pattern(rng)
        for k in range(3):
            cv2.imwrite(str(tmp_path / "faces" / person / f"{k}.png"), another_image(pattern, rng)[..., ::-1])
    (tmp_path / "groups.csv").write_text("identity,group\nann,g1\nbob,g1\ncid,g2\n")
    with pytest.raises(GhostFaceNetsError, match="1 identity .* without a group, e.g. dee"):
        read_grouped_folder(tmp_path / "faces", tmp_path / "groups.csv")
    (tmp_path / "groups.csv").write_text("identity,group\nann,g1\nbob,g1\ncid,g2\ndee,g2\n")
    grouped = read_grouped_folder(tmp_path / "faces", tmp_path / "groups.csv")
    # every pair of each group's 6 images (15), none across groups
    assert len(grouped.pairs) == 30 and sorted(set(grouped.groups.tolist())) == ["g1", "g2"]
    image_group = np.repeat(["g1", "g1", "g2", "g2"], 3)
    assert np.all(image_group[grouped.pairs[:, 0]] == grouped.groups)
    assert np.all(image_group[grouped.pairs[:, 1]] == grouped.groups)
    assert grouped.issame.sum() == 4 * 3
    sampled = read_grouped_folder(tmp_path / "faces", tmp_path / "groups.csv", num_pairs=6, seed=3)
    assert len(sampled.pairs) == 12 and sampled.issame.sum() == 6


@pytest.mark.parametrize(
    "text, message",
    [
        ("ann,g1\nann,g2\n", "ann is listed in two groups"),
        ("ann;g1\n", "expected 'identity,group'"),
        ("# only a comment\n", "no identities"),
    ],
)
def test_bad_groups_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "g.csv").write_text(text)
    with pytest.raises(GhostFaceNetsError, match=message):
        read_groups_file(tmp_path / "g.csv")


def test_cli_pairs_file_with_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_group_pairs(tmp_path)
    model = pooled_colour_onnx(tmp_path / "pooled.onnx")
    out, plot = tmp_path / "out.json", tmp_path / "f.png"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--pairs",
                str(csv),
                "--group-column",
                "region",
                "--far",
                "0.1",
                "--json",
                str(out),
                "--plot",
                str(plot),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "pairs: 2 groups" in printed and "FNMR %" in printed
    result = json.loads(out.read_text())["sets"]["pairs"]
    assert list(result) == ["north", "south", "fairness", "at_threshold"]
    assert result["at_threshold"]["far"] == 0.1 and set(result["at_threshold"]["groups"]) == {"north", "south"}
    assert (tmp_path / "f-pairs.png").read_bytes()[:4] == b"\x89PNG"
    # the same file without a group column: one set in the verification table and the ROC figure
    assert main(["evaluate", "--model", str(model), "--pairs", str(csv), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["sets"]["pairs"]["pairs"] == 24


@pytest.mark.parametrize(
    "args, message",
    [
        (["--group-column", "region", "--folder", "."], "add --pairs PAIRS.csv"),
        (["--groups", "g.csv", "--pairs", "x.csv"], "add --folder DIR"),
        (["--pairs", "3", "--pairs", "4", "--folder", "."], "one pair count at most"),
        (["--pairs", "absent.csv"], "absent.csv: no such file"),
        (["--rfw", ".", "--far", "1"], "--far must be strictly between 0 and 1"),
    ],
)
def test_cli_option_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "x.csv").write_text("a,b,1\n")
    model = pooled_colour_onnx(tmp_path / "pooled.onnx")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", str(model), *args]) == 2
    assert message in capsys.readouterr().err
