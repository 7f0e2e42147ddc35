"""RFW: a small set written in RFW's layout (loose photos with five landmarks, LFW-style pairs per group, groups of
any name), evaluated end to end against the protocol written out here."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest

from ghostfacenets.cli import main
from ghostfacenets.data.align import align_face
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.evaluate.metrics import verification_metrics
from ghostfacenets.evaluate.rfw import RFWError, evaluate_rfw, find_groups, read_rfw
from ghostfacenets.inference import embed_images
from tests.helpers.eval_sets import RFW_GROUPS, RFW_PHOTOS, write_rfw
from tests.helpers.toy_models import pooled_colour_model, pooled_colour_onnx


@pytest.fixture(scope="module")
def rfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rfw(tmp_path_factory.mktemp("rfw"))


def _reference(root: Path, far: float) -> dict:
    """Per group: read the pairs and landmarks, align, embed (flip sum), the .bin metrics; then the spread across
    groups and FMR/FNMR at the threshold of FAR ``far`` over all pairs, by brute force."""
    base = root / "test"
    out: dict = {}
    scores, labels, groups = [], [], []
    for group, loose in RFW_GROUPS.items():
        points = {}
        if loose:
            for line in (base / "txts" / group / f"{group}_lmk.txt").read_text().splitlines():
                fields = line.split("\t")
                points[fields[0].split("/")[-1]] = np.array(fields[2:], dtype=float).reshape(5, 2)

        def crop(identity: str, n: str, group: str = group, points: dict = points) -> np.ndarray:
            file = f"{identity}_{int(n):04d}.jpg"
            image = cv2.imread(str(base / "data" / group / identity / file))[..., ::-1]
            return align_face(image, points[file]) if points else image

        a, b, same = [], [], []
        for line in (base / "txts" / group / f"{group}_pairs.txt").read_text().splitlines():
            f = line.split("\t")
            a.append(crop(f[0], f[1]))
            b.append(crop(f[0], f[2]) if len(f) == 3 else crop(f[2], f[3]))
            same.append(len(f) == 3)
        ea = embed_images(pooled_colour_model(), np.stack(a), progress=False)
        eb = embed_images(pooled_colour_model(), np.stack(b), progress=False)
        out[group] = verification_metrics(ea, eb, same) | {"flip": True}
        na = ea / np.linalg.norm(ea, axis=1, keepdims=True)
        nb = eb / np.linalg.norm(eb, axis=1, keepdims=True)
        scores += np.sum(na.astype(np.float64) * nb, axis=1).tolist()
        labels += same
        groups += [group] * len(same)
    accuracies = [out[g]["accuracy_10fold_mean"] for g in RFW_GROUPS]
    errors = [1 - a for a in accuracies]
    out["fairness"] = {
        "mean": statistics.fmean(accuracies),
        "std": statistics.pstdev(accuracies),
        "ser": max(errors) / min(errors) if min(errors) > 0 else None,
    }
    s, y, g = np.array(scores), np.array(labels), np.array(groups)
    threshold = min(t for t in [*s.tolist(), s.min() - 1] if np.mean(s[~y] > t) <= far)
    out["rates"] = {
        name: (np.mean(s[(g == name) & ~y] > threshold), np.mean(s[(g == name) & y] <= threshold))
        for name in RFW_GROUPS
    }
    out["threshold"] = threshold
    return out


def test_layout(rfw: Path) -> None:
    base, groups = find_groups(rfw)
    assert base == rfw / "test" and groups == ["African", "Asian", "Zeta"]
    assert find_groups(rfw / "test") == (base, groups)
    rfw_set = read_rfw(rfw)
    assert len(rfw_set.pairs) == 48 and rfw_set.issame.sum() == 24
    assert rfw_set.job.count == 3 * 4 * RFW_PHOTOS  # each photo once, though it is in several pairs
    crops = rfw_set.job.load(np.arange(rfw_set.job.count))
    assert crops.shape[1:] == (112, 112, 3)


def test_rfw_end_to_end_matches_the_protocol(rfw: Path) -> None:
    evaluation = evaluate_rfw(pooled_colour_model(), rfw, progress=False, far=0.1)
    metrics = evaluation.metrics
    reference = _reference(rfw, 0.1)
    assert list(metrics) == [*RFW_GROUPS, "fairness", "at_threshold"]
    for group in RFW_GROUPS:
        assert metrics[group].keys() == reference[group].keys()
        assert metrics[group].pop("tar_at_far") == pytest.approx(reference[group].pop("tar_at_far"))
        assert metrics[group] == pytest.approx(reference[group])
    assert metrics["fairness"] == pytest.approx(reference["fairness"])
    assert metrics["fairness"]["ser"] is not None and metrics["fairness"]["ser"] > 1
    at = metrics["at_threshold"]
    assert at["threshold"] == pytest.approx(reference["threshold"]) and at["estimable"] and at["far"] == 0.1
    for group, (fmr, fnmr) in reference["rates"].items():
        assert (at["groups"][group]["fmr"], at["groups"][group]["fnmr"]) == pytest.approx((fmr, fnmr))
        assert at["groups"][group]["pairs"] == 16
    assert evaluation.groups["Asian"].issame.sum() == 8


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: (t / "txts" / "Asian" / "Asian_pairs.txt").write_text("m.0asian0\t1\n"), "'id n1 n2'"),
        (lambda t: (t / "txts" / "Asian" / "Asian_pairs.txt").write_text("m.0asian0\t1\t9\n"), "no image"),
        (lambda t: (t / "txts" / "Asian" / "Asian_pairs.txt").write_text("m.0asian0\tone\t2\n"), "not an integer"),
        (lambda t: (t / "txts" / "Asian" / "Asian_lmk.txt").write_text("/x/m.0asian0_0001.jpg 0 1 2\n"), "x5 y5"),
        (lambda t: (t / "txts" / "Asian" / "Asian_lmk.txt").write_text(""), "no landmarks for m.0asian0/"),
        (
            lambda t: (t / "txts" / "Ghost").mkdir() or (t / "txts" / "Ghost" / "Ghost_pairs.txt").write_text(""),
            "photos of group Ghost",
        ),
    ],
)
def test_damaged_sets_fail_before_embedding(tmp_path: Path, edit, message: str) -> None:
    root = write_rfw(tmp_path / "rfw")
    edit(root / "test")
    with pytest.raises(RFWError, match=message):
        read_rfw(root)


def test_a_group_named_like_a_result_key_is_refused(tmp_path: Path) -> None:
    root = write_rfw(tmp_path / "rfw")
    (root / "test" / "txts" / "Zeta").rename(root / "test" / "txts" / "fairness")
    (root / "test" / "txts" / "fairness" / "Zeta_pairs.txt").rename(
        root / "test" / "txts" / "fairness" / "fairness_pairs.txt"
    )
    (root / "test" / "data" / "Zeta").rename(root / "test" / "data" / "fairness")
    with pytest.raises(GhostFaceNetsError, match="may not be named 'fairness'"):
        evaluate_rfw(pooled_colour_model(), root, progress=False)


def test_cli_rfw(rfw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = pooled_colour_onnx(tmp_path / "pooled.onnx")
    out, plot = tmp_path / "r.json", tmp_path / "roc.svg"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--rfw",
                str(rfw),
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
    assert "skewed error ratio" in printed and "Zeta" in printed and "FMR %" in printed
    result = json.loads(out.read_text())["sets"][rfw.name]
    assert list(result) == [*RFW_GROUPS, "fairness", "at_threshold"]
    assert list(result["fairness"]) == ["mean", "std", "ser"]
    assert list(result["African"]) == [
        "pairs",
        "accuracy_10fold_mean",
        "accuracy_10fold_std",
        "best_threshold_accuracy",
        "best_threshold",
        "auc",
        "eer",
        "tar_at_far",
        "flip",
    ]
    assert result == json.loads(json.dumps(evaluate_rfw(model, rfw, progress=False, far=0.1).metrics))
    assert (tmp_path / f"roc-{rfw.name}.svg").read_text().lstrip().startswith("<?xml") and not plot.exists()
