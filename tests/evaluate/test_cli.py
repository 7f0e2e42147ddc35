"""``ghostfacenets evaluate`` and ``ghostfacenets make-bin`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets import create_model, save_model
from ghostfacenets.cli import main
from ghostfacenets.data.verification_bin import load_verification_bin
from ghostfacenets.evaluate.embed import embed_images
from ghostfacenets.evaluate.metrics import verification_metrics
from tests.conftest import shared_path
from tests.evaluate.test_pairs import _orl_folder
from tests.evaluate.toy_models import pooled_colour_onnx

KEYS = ["pairs", "accuracy_10fold_mean", "accuracy_10fold_std", "best_threshold_accuracy", "best_threshold", "auc",
        "eer", "tar_at_far", "flip"]


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pooled_colour_onnx(tmp_path_factory.mktemp("models") / "pooled.onnx")


def test_evaluate_bins_json_plot_and_table(onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    py2 = shared_path("fixtures", "formats", "bin_sample", "sample_py2.bin")
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    out, plot = tmp_path / "res" / "eval.json", tmp_path / "roc.png"
    code = main(["evaluate", "--model", str(onnx_model), "--bin", str(py2), "--bin", str(py3),
                 "--json", str(out), "--plot", str(plot)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "sample_py2" in printed and "best-thr acc %" in printed and f"wrote JSON to {out}" in printed
    results = json.loads(out.read_text())
    assert list(results) == ["sample_py2", "sample_py3"]
    assert list(results["sample_py2"]) == KEYS and list(results["sample_py2"]["tar_at_far"]) == [
        "1e-1", "1e-2", "1e-3", "1e-4", "1e-5", "1e-6"]
    assert results["sample_py2"] == results["sample_py3"]
    images, issame = load_verification_bin(py2)  # independent route: embed all, metrics on [0::2], [1::2]
    embeddings = embed_images(onnx_model, images, progress=False)
    expected = verification_metrics(embeddings[0::2], embeddings[1::2], issame) | {"flip": True}
    assert results["sample_py2"].pop("tar_at_far") == expected.pop("tar_at_far")
    assert results["sample_py2"] == pytest.approx(expected)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_json_to_stdout_no_flip_and_folder(onnx_model: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    folder = _orl_folder(tmp_path / "orl", subjects=5, per_subject=4)
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    assert main(["evaluate", "--model", str(onnx_model), "--bin", str(py3), "--folder", str(folder),
                 "--pairs", "60", "--seed", "2", "--no-flip", "--json", "-", "--plot", str(tmp_path / "r.svg")]) == 0
    results = json.loads(capsys.readouterr().out)  # pure JSON on stdout: pipes
    assert results["sample_py3"]["flip"] is False and results["orl"]["pairs"] == 60
    assert results["orl"]["accuracy_10fold_mean"] is not None
    assert (tmp_path / "r.svg").read_text().lstrip().startswith("<?xml")


def test_evaluate_a_ghostfacenet_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = save_model(create_model("ghostfacenetv1-0.5-2", embedding_size=128), tmp_path / "m.safetensors")
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    assert main(["evaluate", "--model", str(model), "--bin", str(py3), "--json", "-", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["sample_py3"]["pairs"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bin", "absent.bin"], "absent.bin: no such file"),
        ([], "give at least one --bin"),
        (["--folder", "absent_dir"], "not a folder"),
    ],
)
def test_evaluate_errors_are_one_line(onnx_model: Path, capsys: pytest.CaptureFixture, args: list[str],
                                      message: str) -> None:
    assert main(["evaluate", "--model", str(onnx_model), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("ghostfacenets evaluate: error:")


def test_evaluate_refuses_wrong_crop_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    small = pooled_colour_onnx(tmp_path / "small.onnx", size=96)
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    assert main(["evaluate", "--model", str(small), "--bin", str(py3)]) == 2
    assert "needs 96x96" in capsys.readouterr().err


def test_make_bin(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _orl_folder(tmp_path / "orl", subjects=4, per_subject=3)
    out = tmp_path / "orl.bin"
    assert main(["make-bin", str(folder), str(out), "--pairs", "20", "--seed", "1"]) == 0
    assert "20 pairs (10 same person, 10 different)" in capsys.readouterr().out
    images, issame = load_verification_bin(out)
    assert images.shape == (40, 112, 112, 3) and issame.sum() == 10
    assert main(["make-bin", str(folder), str(tmp_path / "all.bin")]) == 0  # exhaustive: C(12, 2) = 66 pairs
    assert "66 pairs (12 same person, 54 different)" in capsys.readouterr().out
    assert main(["make-bin", str(tmp_path / "nowhere"), str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert np.array_equal(load_verification_bin(out)[1], issame)  # a failed run left the earlier file intact


@pytest.mark.parametrize("command", ["evaluate", "make-bin"])
def test_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: ghostfacenets " + command in capsys.readouterr().out
