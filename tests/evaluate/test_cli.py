"""``ghostfacenets evaluate`` and ``ghostfacenets make-bin`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ghostfacenets import __version__, create_model, save_model
from ghostfacenets.cli import main
from ghostfacenets.data.verification_bin import load_verification_bin, write_verification_bin
from ghostfacenets.evaluate.metrics import verification_metrics
from ghostfacenets.inference import embed_images
from tests.helpers import shared_path
from tests.helpers.faces import another_image, identity_pattern
from tests.helpers.photos import orl_folder
from tests.helpers.toy_models import pooled_colour_onnx

KEYS = [
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


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pooled_colour_onnx(tmp_path_factory.mktemp("models") / "pooled.onnx")


def test_evaluate_bins_json_plot_and_table(onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    py2 = shared_path("fixtures", "formats", "bin_sample", "sample_py2.bin")
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    out, plot = tmp_path / "res" / "eval.json", tmp_path / "roc.png"
    code = main(
        [
            "evaluate",
            "--model",
            str(onnx_model),
            "--bin",
            str(py2),
            "--bin",
            str(py3),
            "--json",
            str(out),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "sample_py2" in printed and "best-thr acc %" in printed and f"wrote JSON to {out}" in printed
    report = json.loads(out.read_text())
    assert (report["ghostfacenets_version"], report["model"]) == (__version__, onnx_model.name)
    results = report["sets"]
    assert list(results) == ["sample_py2", "sample_py3"]
    assert list(results["sample_py2"]) == KEYS and list(results["sample_py2"]["tar_at_far"]) == [
        "1e-1",
        "1e-2",
        "1e-3",
        "1e-4",
        "1e-5",
        "1e-6",
    ]
    assert results["sample_py2"] == results["sample_py3"]
    images, issame = load_verification_bin(py2)  # independent route: embed all, metrics on [0::2], [1::2]
    embeddings = embed_images(onnx_model, images, progress=False)
    expected = verification_metrics(embeddings[0::2], embeddings[1::2], issame) | {"flip": True}
    assert results["sample_py2"].pop("tar_at_far") == expected.pop("tar_at_far")
    assert results["sample_py2"] == pytest.approx(expected)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as figure:  # the PNG's Software field says what made it
        assert figure.text["Software"].startswith(f"ghostfacenets {__version__} (matplotlib ")


def test_evaluate_json_to_stdout_no_flip_and_folder(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = orl_folder(tmp_path / "orl", subjects=5, per_subject=4)
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(onnx_model),
                "--bin",
                str(py3),
                "--folder",
                str(folder),
                "--pairs",
                "60",
                "--seed",
                "2",
                "--no-flip",
                "--json",
                "-",
                "--plot",
                str(tmp_path / "r.svg"),
            ]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)["sets"]  # pure JSON on stdout: pipes
    assert results["sample_py3"]["flip"] is False and results["orl"]["pairs"] == 60
    assert results["orl"]["accuracy_10fold_mean"] is not None
    svg = (tmp_path / "r.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and f"<dc:title>ghostfacenets {__version__} (matplotlib" in svg


def test_evaluate_a_ghostfacenet_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = save_model(create_model("ghostfacenetv1-0.5-2", embedding_size=128), tmp_path / "m.safetensors")
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    assert main(["evaluate", "--model", str(model), "--bin", str(py3), "--json", "-", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["sets"]["sample_py3"]["pairs"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bin", "absent.bin"], "absent.bin: no such file"),
        ([], "give at least one --bin"),
        (["--folder", "absent_dir"], "not a folder"),
    ],
)
def test_evaluate_errors_are_one_line(
    onnx_model: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    assert main(["evaluate", "--model", str(onnx_model), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("ghostfacenets evaluate: error:")


def test_evaluate_refuses_wrong_crop_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    small = pooled_colour_onnx(tmp_path / "small.onnx", size=96)
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    assert main(["evaluate", "--model", str(small), "--bin", str(py3)]) == 2
    assert "needs 96x96" in capsys.readouterr().err


def test_make_bin(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = orl_folder(tmp_path / "orl", subjects=4, per_subject=3)
    out = tmp_path / "orl.bin"
    assert main(["make-bin", str(folder), str(out), "--pairs", "20", "--seed", "1"]) == 0
    assert "20 pairs (10 same person, 10 different)" in capsys.readouterr().out
    images, issame = load_verification_bin(out)
    assert images.shape == (40, 112, 112, 3) and issame.sum() == 10
    assert main(["make-bin", str(folder), str(tmp_path / "all.bin")]) == 0  # exhaustive: C(12, 2) = 66 pairs
    assert "66 pairs (12 same person, 54 different)" in capsys.readouterr().out
    assert main(["make-bin", str(tmp_path / "nowhere"), str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_make_bin_failing_mid_write_keeps_the_earlier_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    folder = orl_folder(tmp_path / "orl", subjects=4, per_subject=3)
    out = tmp_path / "out" / "orl.bin"
    assert main(["make-bin", str(folder), str(out), "--pairs", "20"]) == 0
    before = out.read_bytes()

    def half_written(obj: object, f, protocol: int) -> None:  # the disk fills up in the middle of the file
        f.write(pickle.dumps(obj, protocol=protocol)[:1000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ghostfacenets.data.verification_bin.pickle.dump", half_written)
    capsys.readouterr()
    assert main(["make-bin", str(folder), str(out), "--pairs", "10", "--seed", "5"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["orl.bin"]  # no temp left


@pytest.mark.parametrize("command", ["evaluate", "make-bin"])
def test_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: ghostfacenets " + command in capsys.readouterr().out


@pytest.mark.parametrize("device, message", [("gpu", "unknown device 'gpu'"), ("cuda", "CUDA is not available")])
def test_evaluate_bad_device_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, device: str, message: str
) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    model = save_model(create_model("ghostfacenetv1-0.5-2", embedding_size=32), tmp_path / "m.safetensors")
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    assert main(["evaluate", "--model", str(model), "--bin", str(py3), "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("ghostfacenets evaluate: error:")


def test_plot_format_is_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    py3 = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    # the model does not exist: the plot's suffix must be refused before the model is even looked at
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "absent.onnx"),
                "--bin",
                str(py3),
                "--plot",
                str(tmp_path / "roc.txt"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "roc.txt" in err[0] and ".png" in err[0] and ".svg" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_plot_with_only_ijb_is_refused_up_front(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "IJBC").mkdir()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "absent.onnx"),
                "--ijb",
                str(tmp_path / "IJBC"),
                "--plot",
                str(tmp_path / "roc.png"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--plot" in err[0] and "--bin" in err[0]
    assert not (tmp_path / "roc.png").exists()


def test_plot_of_sets_without_a_roc_is_an_error_not_an_empty_figure(tmp_path: Path) -> None:
    import warnings

    from ghostfacenets.errors import GhostFaceNetsError
    from ghostfacenets.evaluate.plots import plot_roc
    from ghostfacenets.evaluate.verification import SetEvaluation

    only_same = SetEvaluation("same", {"auc": None}, np.array([0.1, 0.5, 0.9]), np.ones(3, bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(GhostFaceNetsError, match="nothing to plot"):
            plot_roc([only_same], tmp_path / "roc.png")
    assert not (tmp_path / "roc.png").exists()


def test_evaluate_bin_dir_prints_the_paper_table(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rng = np.random.default_rng(4)
    folder = tmp_path / "faces_emore"
    folder.mkdir()
    for name in ("agedb_30", "lfw", "my_set"):
        images = [another_image(identity_pattern(rng), rng) for _ in range(40)]
        images[1::4] = [another_image(images[i - 1], rng, 60) for i in range(1, 40, 4)]  # some same pairs
        write_verification_bin(folder / f"{name}.bin", np.stack(images), [p % 2 == 0 for p in range(20)])
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(onnx_model), "--bin-dir", str(folder), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())["sets"]
    assert list(results) == ["lfw", "agedb_30", "my_set"] and all(list(r) == KEYS for r in results.values())
    for name in results:  # the same numbers as --bin gives each file
        assert main(["evaluate", "--model", str(onnx_model), "--bin", str(folder / f"{name}.bin"), "--json", "-"]) == 0
        assert json.loads(capsys.readouterr().out)["sets"][name] == results[name]
    table = printed[printed.index("paper-style table") :].splitlines()
    assert table[1].split() == ["lfw", "agedb_30", "my_set", "mean"]
    row = table[3].split()
    assert row[:3] == ["10-fold", "acc", "%"]
    values = [100 * results[n]["accuracy_10fold_mean"] for n in results]
    assert [float(v) for v in row[3:]] == pytest.approx([*values, sum(values) / 3], abs=6e-4)
