"""The pipeline commands: outputs for people and scripts, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.cli import main
from ghostfacenets.cli.pipeline import _DEFAULT_MODEL
from ghostfacenets.pipeline import FaceRecognizer
from ghostfacenets.pipeline.recognizer import DEFAULT_MODEL
from tests.helpers import shared_path
from tests.helpers.photos import photo


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, text: str) -> None:
    assert code == 2 and err.count("\n") == 1 and "error:" in err and text in err, err


def test_default_model_is_the_registered_pretrained_one() -> None:
    from ghostfacenets.models.registry import PRETRAINED

    assert _DEFAULT_MODEL == DEFAULT_MODEL and DEFAULT_MODEL in PRETRAINED


def test_verify_json_and_text(capsys: pytest.CaptureFixture[str], model_file: Path, recognizer: FaceRecognizer) -> None:
    a, b = photo("img1.jpg"), photo("img2.jpg")
    code, out, _ = run(capsys, "verify", a, b, "--model", model_file, "--json")
    record = json.loads(out)
    assert code == 0 and {"similarity", "threshold", "is_same", "threshold_source"} <= record.keys()
    assert record["similarity"] == pytest.approx(recognizer.verify(a, b).similarity, abs=1e-5)
    assert record["threshold_source"] == "fallback"
    code, out, _ = run(capsys, "verify", a, b, "--model", model_file, "--threshold", "0.999")
    assert code == 0 and out.startswith("same person: no (similarity") and "threshold 0.9990: given" in out
    code, out, _ = run(capsys, "verify", a, b, "--model", model_file, "--all", "--json")
    assert code == 0 and len(json.loads(out)["pairs"]) == 1


def test_detect_outputs_and_crops(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "detect", photo("img5.jpg"), photo("img10.jpg"), "--json", "--crops", tmp_path)
    records = json.loads(out)
    assert code == 0 and [len(r["faces"]) for r in records] == [1, 1]
    assert set(records[0]["faces"][0]["landmarks"]) == {"left_eye", "right_eye", "nose", "left_mouth", "right_mouth"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img10_face0.png", "img5_face0.png"]
    code, out, _ = run(capsys, "detect", photo("img5.jpg"))
    assert code == 0 and "img5.jpg" in out and "score" in out.splitlines()[0]


def test_embed_writes_the_same_vectors_as_the_api(
    capsys: pytest.CaptureFixture[str], model_file: Path, recognizer: FaceRecognizer, tmp_path: Path
) -> None:
    images = [photo("img5.jpg"), photo("img8.jpg")]
    out_file = tmp_path / "x.npy"
    code, out, _ = run(capsys, "embed", *images, "--out", out_file, "--model", model_file, "--json")
    assert code == 0 and json.loads(out)["shape"] == [2, 512]
    np.testing.assert_allclose(np.load(out_file), recognizer.embed(images), atol=1e-5)


def test_gallery_round_trip(capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    code, out, _ = run(
        capsys, "enroll", "--db", db, "angelina", photo("img1.jpg"), photo("img2.jpg"), "--model", model_file
    )
    assert code == 0 and "enrolled 2 face(s) of angelina into gallery default" in out
    assert run(capsys, "enroll", "--db", db, "jennifer", photo("img3.jpg"), "--model", model_file)[0] == 0
    code, out, _ = run(capsys, "identify", "--db", db, photo("img3.jpg"), "--model", model_file, "--json")
    record = json.loads(out)
    assert code == 0 and record["identity"] == "jennifer" and record["matches"][0]["similarity"] > 0.9999
    code, out, _ = run(capsys, "identify", "--db", db, photo("img3.jpg"), "--model", model_file, "-k", "1")
    assert code == 0 and out.startswith(f"{photo('img3.jpg')}: jennifer (similarity")
    code, out, _ = run(capsys, "gallery", "--db", db, "list", "--gallery", "default", "--json")
    assert [(r["name"], r["faces"]) for r in json.loads(out)["subjects"]] == [("angelina", 2), ("jennifer", 1)]
    code, out, _ = run(capsys, "gallery", "--db", db, "list", "--json")
    assert [(g["name"], g["subjects"], g["faces"]) for g in json.loads(out)["galleries"]] == [("default", 2, 3)]
    code, out, _ = run(capsys, "gallery", "--db", db, "remove", "angelina")
    assert code == 0 and "removed angelina (2 faces)" in out
    code, _, err = run(capsys, "enroll", "--db", db, "x", photo("img5.jpg"), "--model", model_file, "--no-flip")
    assert_one_line_error(code, err, "holds embeddings of")


def test_calibrate_then_verify_uses_the_calibrated_threshold(
    capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path
) -> None:
    sample = shared_path("fixtures", "formats", "bin_sample", "sample_py2.bin")
    out_model = tmp_path / "calibrated.safetensors"
    code, out, _ = run(
        capsys,
        "calibrate",
        sample,
        "--model",
        model_file,
        "--far",
        "0.25",
        "--far",
        "0.001",
        "--write",
        out_model,
        "--json",
    )
    report = json.loads(out)
    assert code == 0 and report["written"]["thresholds"] == 1 and out_model.exists()
    threshold = next(t["threshold"] for t in report["thresholds"] if t["far"] == 0.25)
    code, out, _ = run(capsys, "verify", photo("img1.jpg"), photo("img2.jpg"), "--model", out_model, "--json")
    record = json.loads(out)
    assert record["threshold_source"] == "calibrated" and record["threshold"] == pytest.approx(threshold)
    assert record["threshold_far"] == 0.25
    code, out, _ = run(capsys, "calibrate", sample, "--model", model_file, "--far", "0.25")
    assert code == 0 and "target FAR" in out and "0.25" in out


def test_bad_inputs_give_one_line_errors(
    capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path, blank_image: np.ndarray
) -> None:
    import cv2
    from PIL import Image

    text_file = tmp_path / "notes.jpg"
    text_file.write_text("hello")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), blank_image)
    huge = tmp_path / "huge.png"
    Image.new("1", (9_000, 9_000)).save(huge)
    good = photo("img1.jpg")
    cases = [
        (("verify", tmp_path / "missing.jpg", good), "no such file"),
        (("verify", text_file, good), "not an image"),
        (("verify", blank, good), "no face found"),
        (("verify", huge, good), "larger than the limit"),
        (("embed", blank, "--out", tmp_path / "e.npy"), "no face found"),
        (("identify", "--db", tmp_path / "none.sqlite", good), "no such gallery"),
        (("verify", good, good, "--far", "0.001"), "no calibrated thresholds"),
        (("verify", good, good, "--det-size", "8"), "max_size"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv, "--model", model_file)
        assert_one_line_error(code, err, message)
    code, _, err = run(capsys, "verify", good, good, "--model", tmp_path / "nomodel.safetensors")
    assert_one_line_error(code, err, "no such file and not a pretrained name")
    code, _out, err = run(capsys, "detect", blank)
    assert code == 1 and "no face found" in err
    assert not (tmp_path / "e.npy").exists()


def test_several_faces_note(capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path) -> None:
    import cv2

    from ghostfacenets.data.images import load_image

    big, small = load_image(photo("img5.jpg")), cv2.resize(load_image(photo("img10.jpg")), (204, 297))
    canvas = np.full((512, 600, 3), 255, np.uint8)
    canvas[:, :330], canvas[100:397, 380:584] = big, small
    group = tmp_path / "two.png"
    cv2.imwrite(str(group), canvas[..., ::-1])
    code, _, err = run(capsys, "embed", group, "--out", tmp_path / "one.npy", "--model", model_file)
    assert code == 0 and "2 faces, using the largest (--all for every face)" in err
    assert np.load(tmp_path / "one.npy").shape == (1, 512)
    code, out, _ = run(capsys, "embed", group, "--out", tmp_path / "all.npy", "--all", "--model", model_file, "--json")
    assert code == 0 and [r["face"] for r in json.loads(out)["rows"]] == [0, 1]
    assert np.load(tmp_path / "all.npy").shape == (2, 512)


@pytest.mark.parametrize("device, message", [("gpu", "unknown device 'gpu'"), ("cuda", "CUDA is not available")])
def test_bad_device_is_one_line(
    capsys: pytest.CaptureFixture[str], model_file: Path, device: str, message: str
) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    good = photo("img1.jpg")
    code, _, err = run(capsys, "verify", good, good, "--model", model_file, "--device", device)
    assert_one_line_error(code, err, message)


def test_detect_crops_of_images_with_the_same_name_do_not_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import cv2

    for folder, source in (("a", "img5.jpg"), ("b", "img10.jpg"), ("c", "img16.jpg")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jpg").write_bytes(photo(source).read_bytes())
    crops = tmp_path / "crops"
    code, out, _ = run(
        capsys,
        "detect",
        tmp_path / "a" / "x.jpg",
        tmp_path / "b" / "x.jpg",
        tmp_path / "c" / "x.jpg",
        "--crops",
        crops,
        "--json",
    )
    records = json.loads(out)
    written = [r["crops"][0] for r in records]
    assert (
        code == 0
        and len(set(written)) == 3
        and sorted(p.name for p in crops.iterdir()) == sorted(Path(p).name for p in written)
    )
    pixels = [cv2.imread(p) for p in written]
    assert all(p.shape == (112, 112, 3) for p in pixels)
    assert min(np.abs(a.astype(int) - b).mean() for i, a in enumerate(pixels) for b in pixels[i + 1 :]) > 5


def test_detect_reports_a_failed_crop_encoding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    monkeypatch.setattr(cv2, "imencode", lambda *args: (False, None))
    code, _, err = run(capsys, "detect", photo("img5.jpg"), "--crops", tmp_path)
    assert_one_line_error(code, err, "could not encode")
    assert list(tmp_path.iterdir()) == []


def test_failed_enrolment_leaves_no_gallery_file(
    capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path, blank_image: np.ndarray
) -> None:
    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), blank_image)
    db = tmp_path / "new.sqlite"
    code, _, err = run(capsys, "enroll", "--db", db, "nobody", blank, "--model", model_file)
    assert_one_line_error(code, err, "no face found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.png"]


def test_gallery_remove_strips_the_name_as_enroll_does(
    capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path
) -> None:
    db = tmp_path / "g.sqlite"
    assert run(capsys, "enroll", "--db", db, " Alice ", photo("img1.jpg"), "--model", model_file)[0] == 0
    code, out, _ = run(capsys, "gallery", "--db", db, "remove", " Alice ")
    assert code == 0 and "removed Alice (1 faces)" in out
