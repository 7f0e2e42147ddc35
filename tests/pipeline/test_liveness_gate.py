"""The liveness gate of verify, enroll and identify, in Python and on the command line: each face gets its score
and decision; a face judged not live is refused with its own error and never enrolled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.cli import main
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.gallery import open_store
from ghostfacenets.liveness import LivenessChecker, SpoofSuspectedError, write_calibrated
from ghostfacenets.pipeline import FaceRecognizer
from ghostfacenets.pipeline.bulk import enroll_folder
from tests.helpers.liveness import SAMPLES
from tests.helpers.photos import photo

LIVE, PRINT, REPLAY = SAMPLES / "image_T1.jpg", SAMPLES / "image_F1.jpg", SAMPLES / "image_F2.jpg"


@pytest.fixture(scope="module")
def checker() -> LivenessChecker:
    return LivenessChecker(backend="eager")


@pytest.fixture(scope="module")
def gated(model_file: Path, checker: LivenessChecker) -> FaceRecognizer:
    return FaceRecognizer(model_file, device="cpu", backend="fused", liveness=checker)


def test_verify_reports_each_face_and_refuses_a_spoof(gated: FaceRecognizer, checker: LivenessChecker) -> None:
    result = gated.verify(LIVE, photo("img1.jpg"))
    assert result.liveness_a is not None and result.liveness_b is not None
    assert result.liveness_a.is_live and result.liveness_a.score > 0.99
    record = result.to_dict()
    assert record["liveness_a"]["is_live"] and record["liveness_b"]["threshold_source"] == "default"
    refused = r"image_F1\.jpg: spoof suspected, .* \(liveness 0\.1840 <= threshold 0\.9150 \(default\)\)"
    with pytest.raises(SpoofSuspectedError, match=refused):
        gated.verify(LIVE, PRINT)
    unchecked = gated.verify(LIVE, PRINT, liveness=False)  # one call may turn it off in Python
    assert unchecked.liveness_b is None and "liveness_a" not in unchecked.to_dict()


def test_a_recognizer_without_the_gate_checks_when_asked(model_file: Path) -> None:
    plain = FaceRecognizer(model_file, device="cpu", backend="fused")
    assert plain.verify(LIVE, REPLAY).liveness_b is None
    with pytest.raises(SpoofSuspectedError, match="image_F2"):
        plain.verify(LIVE, REPLAY, liveness=True)


def test_a_spoof_is_never_enrolled(gated: FaceRecognizer, tmp_path: Path) -> None:
    db = tmp_path / "gallery.sqlite"
    with pytest.raises(SpoofSuspectedError):
        gated.enroll(db, "someone", [LIVE, PRINT])
    assert not db.exists()  # refused before anything was stored
    enrolled = gated.enroll(db, "someone", [LIVE])
    assert enrolled.added[0].detection["liveness"]["is_live"]
    with pytest.raises(SpoofSuspectedError):
        gated.enroll(db, "someone", [REPLAY])
    with open_store(db) as store:
        assert store.gallery("default").faces == 1
        found = gated.identify(LIVE, store)
        assert found.identity == "someone" and found.liveness is not None and found.liveness.is_live
        assert found.to_dict()["liveness"]["is_live"]
        with pytest.raises(SpoofSuspectedError):
            gated.identify(PRINT, store)
        with pytest.raises(SpoofSuspectedError):
            gated.identify_faces(REPLAY, store)


def test_aligned_crops_cannot_be_judged(gated: FaceRecognizer) -> None:
    crop = np.zeros((112, 112, 3), np.uint8)
    with pytest.raises(GhostFaceNetsError, match="not on aligned crops"):
        gated.verify(crop, crop)


def test_bulk_enrolment_skips_spoofs(gated: FaceRecognizer, tmp_path: Path) -> None:
    folder = tmp_path / "people"
    (folder / "ann").mkdir(parents=True)
    shutil.copy(LIVE, folder / "ann" / "live.jpg")
    shutil.copy(PRINT, folder / "ann" / "poster.jpg")
    with open_store(tmp_path / "bulk.sqlite") as store:
        summary = enroll_folder(gated, store, "default", folder)
        assert summary.enrolled == ["ann/live.jpg"] and summary.spoof_suspected == ["ann/poster.jpg"]
        assert summary.to_dict()["spoof_suspected"] == 1 and store.gallery("default").faces == 1


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_gate(capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path) -> None:
    common = ("--model", model_file, "--backend", "fused")
    code, out, _ = _run(capsys, "verify", LIVE, photo("img1.jpg"), *common, "--liveness", "--json")
    assert code == 0 and json.loads(out)["liveness_a"]["is_live"] and json.loads(out)["liveness_b"]["score"] > 0.9
    code, out, _ = _run(capsys, "verify", LIVE, photo("img1.jpg"), *common, "--liveness")
    assert code == 0 and "image_T1.jpg: live (liveness 1.0000 > threshold 0.9150 (default))" in out
    code, _, err = _run(capsys, "verify", LIVE, PRINT, *common, "--liveness")
    assert code == 2 and err.count("\n") == 1 and "spoof suspected" in err and "image_F1.jpg" in err
    code, _, err = _run(capsys, "verify", LIVE, PRINT, *common, "--liveness-threshold", "0.1")  # implies the gate
    assert code == 0, err
    db = tmp_path / "g.sqlite"
    code, _, err = _run(capsys, "enroll", "--db", db, "ann", LIVE, REPLAY, *common, "--liveness")
    assert code == 2 and "spoof suspected" in err and not db.exists()
    code, out, _ = _run(capsys, "enroll", "--db", db, "ann", LIVE, *common, "--liveness", "--json")
    assert code == 0 and json.loads(out)["liveness"][0]["is_live"]
    code, out, _ = _run(capsys, "identify", "--db", db, LIVE, *common, "--liveness")
    assert code == 0 and "image_T1.jpg: live (liveness" in out and "ann" in out
    code, _, err = _run(capsys, "identify", "--db", db, PRINT, *common, "--liveness")
    assert code == 2 and "spoof suspected" in err
    code, _, err = _run(capsys, "verify", LIVE, LIVE, *common, "--liveness-threshold", "1.5")
    assert code == 2 and "a liveness threshold lies in [0, 1]" in err
    report = {"threshold": 0.05, "bpcer": 0.0, "bpcer_target": 0.01, "set": "mine", "bona_fide": 100, "attacks": None}
    calibrated = write_calibrated(report, tmp_path / "calibrated.safetensors")
    code, out, _ = _run(capsys, "verify", LIVE, PRINT, *common, "--liveness-model", calibrated, "--json")
    assert code == 0 and json.loads(out)["liveness_b"]["threshold_source"] == "calibrated"
    assert json.loads(out)["liveness_b"]["threshold"] == 0.05
