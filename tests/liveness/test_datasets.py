"""The presentation-attack set layouts: folders, labels CSV, CelebA-Spoof's label files and OULU-NPU's protocols
(the last two as small stand-ins in their published layouts), and the scoring of images and videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ghostfacenets.liveness.datasets import BONA_FIDE, PadSetError, read_pad_set, score_pad_set
from tests.helpers.liveness import SAMPLES


def test_folder_and_csv_layouts(pad_folder: Path, tmp_path: Path) -> None:
    pad_set = read_pad_set(pad_folder)
    assert pad_set.layout == "folder" and pad_set.counts() == {BONA_FIDE: 6, "print": 1, "replay": 1}
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,label,species\n"
        f"{SAMPLES / 'image_T1.jpg'},live,\n"
        f"{SAMPLES / 'image_F1.jpg'},spoof,poster\n"
        f"{SAMPLES / 'image_F2.jpg'},0,\n"
        f"{SAMPLES / 'image_F2.jpg'},replay,\n"
    )
    pad_set = read_pad_set(labels)
    assert pad_set.layout == "csv" and [s.species for s in pad_set.samples] == [BONA_FIDE, "poster", "attack", "replay"]
    labels.write_text("file,class\nx.jpg,live\n")
    with pytest.raises(PadSetError, match="path and label"):
        read_pad_set(labels)
    with pytest.raises(PadSetError, match="live/ folder"):
        read_pad_set(tmp_path)
    with pytest.raises(PadSetError, match="no such file or folder"):
        read_pad_set(tmp_path / "missing")


def test_celeba_spoof_labels(tmp_path: Path) -> None:
    root = tmp_path / "CelebA_Spoof"
    (root / "metas" / "intra_test").mkdir(parents=True)
    live, spoof = [0] * 44, [0] * 44
    spoof[40], spoof[43] = 8, 1  # spoof type 8 (pad), spoof
    labels = {"Data/test/1/live/000001.jpg": live, "Data/test/1/spoof/000002.jpg": spoof}
    (root / "metas" / "intra_test" / "test_label.json").write_text(json.dumps(labels))
    pad_set = read_pad_set(root)
    assert pad_set.layout == "celeba-spoof" and pad_set.counts() == {BONA_FIDE: 1, "pad": 1}
    assert pad_set.samples[0].path == root / "Data/test/1/live/000001.jpg"


def _video(path: Path, image: Path, frames: int = 6) -> None:
    picture = cv2.imread(str(image))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (picture.shape[1], picture.shape[0]))
    for _ in range(frames):
        writer.write(picture)
    writer.release()


def test_oulu_npu_protocols_and_video_scoring(tmp_path: Path, detector, eager_checker) -> None:
    root = tmp_path / "OULU-NPU"
    (root / "Protocols" / "Protocol_1").mkdir(parents=True)
    (root / "Test_files").mkdir()
    (root / "Protocols" / "Protocol_1" / "Test.txt").write_text("+1,1_1_36_1\n-1,1_1_36_2\n-2,1_1_36_4\n")
    _video(root / "Test_files" / "1_1_36_1.avi", SAMPLES / "image_T1.jpg")
    _video(root / "Test_files" / "1_1_36_2.avi", SAMPLES / "image_F1.jpg")
    (root / "Test_files" / "1_1_36_4.avi").write_bytes(b"not a video")
    pad_set = read_pad_set(root, protocol="1", split="test")
    assert pad_set.layout == "oulu-npu" and [s.species for s in pad_set.samples] == [BONA_FIDE, "print", "replay"]

    def detect(image: np.ndarray) -> list:
        return sorted(detector.detect(image), key=lambda f: -f.area)

    scored = score_pad_set(pad_set, detect, eager_checker.scores, frames=3)
    rgb = np.ascontiguousarray(cv2.imread(str(SAMPLES / "image_T1.jpg"))[..., ::-1])
    still = eager_checker.scores(rgb, detect(rgb)[:1])[0]
    assert scored.scores[pad_set.samples[0].path] == pytest.approx(still, abs=0.05)  # MJPG-compressed frames
    assert scored.scores[pad_set.samples[1].path] < 0.5
    assert "not a video" in scored.unscored[pad_set.samples[2].path]
    scores = scored.pad_scores()
    assert scores.attacks_unscored == {"replay": 1} and list(scores.attacks) == ["print"]
    with pytest.raises(PadSetError, match="split must be one of"):
        read_pad_set(root, split="val")
    (root / "Protocols" / "Protocol_1" / "Test.txt").write_text("x,1_1_36_1\n")
    with pytest.raises(PadSetError, match="unexpected line"):
        read_pad_set(root)
    shutil.rmtree(root / "Protocols" / "Protocol_1")
    with pytest.raises(PadSetError, match="cannot read the OULU-NPU protocol"):
        read_pad_set(root)
