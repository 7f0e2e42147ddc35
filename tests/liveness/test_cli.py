"""``evaluate --pad``, ``calibrate --liveness`` and ``export --liveness``: the ISO/IEC 30107-3 report on a small
labelled set against the reference implementation's scores, the calibrated threshold in use, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.cli import main
from ghostfacenets.liveness import LivenessChecker, SpoofSuspectedError
from ghostfacenets.liveness.crop import reference_box
from tests.helpers.liveness import SAMPLES, read_bgr


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def reference_scores(pad_folder: Path, reference, detector) -> dict[str, list[float]]:
    """The reference implementation's score of the largest face of every photo, by kind."""
    scores: dict[str, list[float]] = {}
    for path in sorted(pad_folder.rglob("*.jpg")):
        bgr = read_bgr(path)
        face = max(detector.detect(np.ascontiguousarray(bgr[..., ::-1])), key=lambda f: f.area)
        kind = "live" if path.parent.name == "live" else path.parent.name
        scores.setdefault(kind, []).append(reference.score(bgr, list(reference_box(face.box))))
    return scores


def test_evaluate_pad_reports_the_iso_metrics(
    capsys: pytest.CaptureFixture[str], pad_folder: Path, reference_scores, tmp_path: Path
) -> None:
    out_json, det = tmp_path / "pad.json", tmp_path / "det.png"
    code, out, _ = _run(
        capsys, "evaluate", "--pad", pad_folder, "--backend", "eager", "--json", out_json, "--plot", det
    )
    assert code == 0, out
    report = json.loads(out_json.read_text())
    t = 0.915
    live = np.array(reference_scores["live"])
    at = report["at_threshold"]
    assert report["bona_fide"] == 6 and report["attacks"] == {"print": 1, "replay": 1}
    assert at["bpcer"] == pytest.approx(np.mean(live <= t))
    for species in ("print", "replay"):
        assert at["apcer"][species] == pytest.approx(np.mean(np.array(reference_scores[species]) > t))
    assert at["acer"] == pytest.approx((at["apcer_max"] + at["bpcer"]) / 2)
    assert report["threshold_source"] == "default" and report["non_response"]["bpnrr"] == 0
    assert (
        set(report["bpcer_at_apcer"]) == {"0.01", "0.05", "0.1"} and not report["bpcer_at_apcer"]["0.01"]["estimable"]
    )
    assert report["scores"]["bona_fide"]["min"] == pytest.approx(live.min(), abs=1e-5)
    for figure in (det, tmp_path / "det-scores.png"):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "APCER (max, " in out and "BPCER @ APCER 5 %" in out and "wrote figure" in out


def test_calibrate_then_use_the_threshold(
    capsys: pytest.CaptureFixture[str], pad_folder: Path, reference_scores, tmp_path: Path
) -> None:
    written = tmp_path / "calibrated.safetensors"
    code, out, _ = _run(
        capsys,
        "calibrate",
        "--liveness",
        pad_folder,
        "--bpcer",
        "0.2",
        "--write",
        written,
        "--backend",
        "eager",
        "--json",
    )
    assert code == 0, out
    report = json.loads(out)
    live = np.sort(reference_scores["live"])
    # at most one of the six live faces (20 %) refused: the threshold lies just below the second lowest score
    assert live[0] - 1e-5 <= report["threshold"] < live[1] and report["bpcer"] == pytest.approx(1 / 6)
    assert set(report["attacks"]["apcer"]) == {"print", "replay"}
    checker = LivenessChecker(written, backend="eager")
    assert checker.threshold.source == "calibrated" and checker.threshold.value == report["threshold"]
    assert (
        checker.threshold.bpcer == 0.2 and "calibrated at BPCER 0.2 on pad_set (6 live faces)" in checker.threshold.note
    )


def test_export_liveness_onnx(capsys: pytest.CaptureFixture[str], tmp_path: Path, detector) -> None:
    out_file = tmp_path / "liveness.onnx"
    code, out, _ = _run(capsys, "export", "--liveness", out_file, "--json")
    assert code == 0
    entry = json.loads(out)["liveness"][str(out_file)]
    assert entry["max_abs_difference_vs_pytorch"] <= 1e-5 and entry["bytes"] == out_file.stat().st_size
    rgb = np.ascontiguousarray(read_bgr(SAMPLES / "image_F2.jpg")[..., ::-1])
    with pytest.raises(SpoofSuspectedError, match="spoof suspected"):
        LivenessChecker(out_file).require_live(rgb, detector.detect(rgb)[:1], "image_F2.jpg")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate"], "--model is needed"),
        (["evaluate", "--pad", "/nonexistent/pad"], "no such file or folder"),
        (["evaluate", "--pad", "x", "--bin", "y.bin"], "--pad evaluates the liveness check on its own"),
        (["calibrate"], "give the labelled PAIRS file"),
        (["calibrate", "--liveness", "x", "--write", "out.onnx"], "written as a .safetensors file"),
        (["export", "--liveness", "out.txt"], "written as .onnx, .pte or .tflite"),
        (["export"], "give the MODEL to export"),
    ],
)
def test_one_line_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err, err
