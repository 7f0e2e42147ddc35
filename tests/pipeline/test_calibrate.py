"""Threshold calibration: pairs files, hand-worked thresholds, .bin and photo pairs end to end, metadata writing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets import __version__
from ghostfacenets.pipeline import FaceRecognizer
from ghostfacenets.pipeline.calibrate import (
    CalibrationError,
    calibrate,
    read_pairs_file,
    score_photo_pairs,
    thresholds_at,
    write_thresholds,
)
from tests.helpers import shared_path
from tests.helpers.photos import photo


def test_pairs_file_formats(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("file_x,file_y,Decision\nimg1.jpg,img2.jpg,Yes\nimg1.jpg,img3.jpg,No\n")
    (tmp_path / "b.txt").write_text("# comment\nx/1.jpg  x/2.jpg 1\n\nx/1.jpg x/3.jpg 0\n")
    (tmp_path / "c.tsv").write_text("p q.jpg\tr.jpg\tsame\np q.jpg\ts.jpg\tdifferent\n")
    assert read_pairs_file(tmp_path / "a.csv") == [
        (tmp_path / "img1.jpg", tmp_path / "img2.jpg", True),
        (tmp_path / "img1.jpg", tmp_path / "img3.jpg", False),
    ]
    assert read_pairs_file(tmp_path / "b.txt", root="/data") == [
        (Path("/data/x/1.jpg"), Path("/data/x/2.jpg"), True),
        (Path("/data/x/1.jpg"), Path("/data/x/3.jpg"), False),
    ]
    assert [p[2] for p in read_pairs_file(tmp_path / "c.tsv")] == [True, False]
    assert read_pairs_file(tmp_path / "c.tsv")[0][0] == tmp_path / "p q.jpg"
    (tmp_path / "bad.txt").write_text("a.jpg b.jpg 1\na.jpg c.jpg maybe\n")
    with pytest.raises(CalibrationError, match="line 2"):
        read_pairs_file(tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(CalibrationError, match="no pairs"):
        read_pairs_file(tmp_path / "empty.txt")


def test_deepface_master_csv_is_read() -> None:
    master = shared_path("data", "deepface_testpairs", "master.csv")
    pairs = read_pairs_file(master)
    with open(master, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(pairs) == len(rows) == 300 and sum(p[2] for p in pairs) == 38
    assert all(p[0].parent == master.parent for p in pairs)


def test_thresholds_on_a_hand_worked_example() -> None:
    # Different pairs score 0.9, 0.5, 0.3, 0.1 (4 of them); same pairs 0.95, 0.6, 0.4, 0.2.
    scores = np.array([0.9, 0.5, 0.3, 0.1, 0.95, 0.6, 0.4, 0.2])
    issame = np.array([False] * 4 + [True] * 4)
    by_far = {t["far"]: t for t in thresholds_at(scores, issame, [0.5, 0.25, 0.01])}
    # FAR 0.5: two false accepts allowed -> threshold 0.3 (accepts 0.9 and 0.5); same pairs <= 0.3 rejected: 0.2.
    assert by_far[0.5]["threshold"] == pytest.approx(0.3) and by_far[0.5]["frr"] == pytest.approx(0.25)
    assert by_far[0.5]["measured_far"] == pytest.approx(0.5) and by_far[0.5]["estimable"]
    # FAR 0.25: one false accept -> threshold 0.5; rejected same pairs 0.4, 0.2.
    assert by_far[0.25]["threshold"] == pytest.approx(0.5) and by_far[0.25]["frr"] == pytest.approx(0.5)
    # FAR 0.01 cannot be measured on four different pairs: no false accept at all, threshold 0.9.
    assert by_far[0.01]["threshold"] == pytest.approx(0.9) and not by_far[0.01]["estimable"]
    assert by_far[0.01]["frr"] == pytest.approx(0.75)
    with pytest.raises(CalibrationError, match="strictly between"):
        thresholds_at(scores, issame, [0.0])


def test_calibrate_on_a_bin_and_write_the_thresholds(
    recognizer: FaceRecognizer, model_file: Path, tmp_path: Path
) -> None:
    from ghostfacenets.data.verification_bin import load_verification_bin

    path = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    report = calibrate(recognizer, path, [0.25, 1e-3], set_name="sample")
    assert (report["pairs"], report["same_pairs"], report["different_pairs"]) == (8, 4, 4)
    assert report["ghostfacenets_version"] == __version__
    images, issame = load_verification_bin(path)
    embeddings = recognizer.embed_aligned(images).astype(np.float64)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    scores = np.sum(embeddings[0::2] * embeddings[1::2], axis=1)
    expected = thresholds_at(scores, issame, [0.25, 1e-3])
    for got, want in zip(report["thresholds"], expected, strict=True):  # scores in float64: equal to ~1e-8
        assert got == {**want, "threshold": pytest.approx(want["threshold"], abs=1e-6)}
    out, written = write_thresholds(model_file, report, tmp_path / "calibrated.safetensors")
    assert written == 1  # FAR 1e-3 is not measurable on 4 different pairs and is not written
    calibrated = FaceRecognizer(out, device="cpu")
    threshold = calibrated.threshold()
    assert threshold.source == "calibrated" and threshold.far == 0.25 and threshold.set == "sample"
    assert threshold.value == pytest.approx(next(t["threshold"] for t in expected if t["far"] == 0.25))
    assert calibrated.metadata["ghostfacenets_version"] == __version__
    entry = calibrated.metadata["thresholds"][0]
    assert entry["pairs"] == 8 and entry["different_pairs"] == 4 and entry["flip"] is True
    again, _ = write_thresholds(out, report, out)  # recalibrating the same set replaces, not duplicates
    assert len(FaceRecognizer(again, device="cpu").metadata["thresholds"]) == 1
    unmeasurable = calibrate(recognizer, path, [1e-3])
    with pytest.raises(CalibrationError, match="nothing written"):
        write_thresholds(model_file, unmeasurable, tmp_path / "none.safetensors")


def test_labelled_photo_pairs_run_end_to_end(recognizer: FaceRecognizer) -> None:
    """All 300 labelled pairs of master.csv (25 photos, each embedded once) go through the whole pipeline."""
    pairs = read_pairs_file(shared_path("data", "deepface_testpairs", "master.csv"))
    scores, issame, problems = score_photo_pairs(recognizer, pairs, progress=False)
    assert problems == [] and scores.shape == (300,) and issame.sum() == 38
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)
    a, b, _ = pairs[7]
    assert scores[7] == pytest.approx(recognizer.verify(a, b).similarity, abs=1e-5)
    report = calibrate(recognizer, shared_path("data", "deepface_testpairs", "master.csv"), [0.1, 0.01], progress=False)
    assert report["pairs"] == 300 and report["lowest_measurable_far"] == pytest.approx(1 / 262)
    assert [t["estimable"] for t in report["thresholds"]] == [True, True]


def test_unusable_photos_are_reported_or_skipped(
    recognizer: FaceRecognizer, blank_image: np.ndarray, tmp_path: Path
) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "blank.png"), blank_image)
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(
        f"{photo('img1.jpg')} {photo('img2.jpg')} 1\n{photo('img1.jpg')} {photo('img3.jpg')} 0\n"
        f"{photo('img1.jpg')} blank.png 0\n"
    )
    with pytest.raises(CalibrationError, match="no face found.*--skip-unusable"):
        calibrate(recognizer, pairs_file, progress=False)
    report = calibrate(recognizer, pairs_file, [0.5], skip_unusable=True, progress=False)
    assert report["pairs"] == 2 and len(report["unusable_images"]) == 1
    (tmp_path / "same_only.txt").write_text(f"{photo('img1.jpg')} {photo('img2.jpg')} 1\n")
    with pytest.raises(CalibrationError, match="both same and different"):
        calibrate(recognizer, tmp_path / "same_only.txt", progress=False)


@pytest.mark.parametrize("seed", range(5))
def test_far_at_the_stored_threshold_never_exceeds_the_target(seed: int) -> None:
    rng = np.random.default_rng(seed)
    different = rng.uniform(-0.3, 0.3, 100)
    different[:2] = [0.9, 0.1234564]  # FAR 0.01 allows one false accept: the threshold is 0.1234564 itself
    scores = np.concatenate([different, rng.uniform(0.0, 1.0, 50)])
    issame = np.r_[np.zeros(100, bool), np.ones(50, bool)]
    for record in thresholds_at(scores, issame, [0.01, 0.05, 0.1]):
        stored = record["threshold"]
        far = np.mean(different > stored)
        assert far <= record["far"] and record["measured_far"] == pytest.approx(far)
        assert record["frr"] == pytest.approx(np.mean(scores[issame] <= stored), abs=1e-6)
    assert thresholds_at(scores, issame, [0.01])[0]["threshold"] >= 0.1234564
