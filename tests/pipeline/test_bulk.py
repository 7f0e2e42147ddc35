"""Bulk enrolment of an identity folder of real photos through the CLI: the summary, resuming after an
interruption, searching what was enrolled, crops and re-embedding with another model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ghostfacenets.cli import main
from ghostfacenets.gallery import open_store
from ghostfacenets.pipeline import FaceRecognizer
from ghostfacenets.pipeline.recognizer import image_sha256
from tests.helpers.photos import photo

PEOPLE = {"ann": ["img1.jpg", "img2.jpg", "img4.jpg"], "cy": ["img13.jpg", "img14.jpg"], "dee": ["img16.jpg"]}


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def folder(tmp_path: Path, blank_image: np.ndarray) -> Path:
    """One sub-folder per person, plus a photo without a face, an unreadable one and a group photo."""
    root = tmp_path / "people"
    for person, names in PEOPLE.items():
        (root / person).mkdir(parents=True)
        for name in names:
            shutil.copy(photo(name), root / person / name)
    cv2.imwrite(str(root / "dee" / "blank.png"), blank_image)
    (root / "dee" / "notes.jpg").write_text("not an image")
    a, b = cv2.imread(str(photo("img3.jpg"))), cv2.imread(str(photo("img8.jpg")))
    b = cv2.resize(b, (b.shape[1] * a.shape[0] // b.shape[0], a.shape[0]))
    cv2.imwrite(str(root / "cy" / "group.jpg"), cv2.hconcat([a, b]))
    (root / "empty").mkdir()  # no photos: not a person
    return root


def test_bulk_enrolment_summary_resume_and_search(
    capsys: pytest.CaptureFixture[str],
    model_file: Path,
    recognizer: FaceRecognizer,
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "g.sqlite"
    argv = ("enroll", "--db", db, "--gallery", "staff", "--folder", folder, "--model", model_file, "--json")
    # an interruption after the first batch: what was stored stays, the rest is enrolled by running it again
    from ghostfacenets.gallery.sqlite import SQLiteStore

    real, calls = SQLiteStore.enroll_many, []

    def interrupted(self: SQLiteStore, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SQLiteStore, "enroll_many", interrupted)
    code, _, err = run(capsys, *argv, "--batch", "2")
    assert code == 130 and "interrupted" in err
    monkeypatch.setattr(SQLiteStore, "enroll_many", real)
    with open_store(db) as store:
        assert store.gallery("staff").faces == 2  # the first batch, whole
    code, out, _ = run(capsys, *argv, "--batch", "2")
    summary = json.loads(out)
    assert code == 0 and (summary["people"], summary["images"]) == (3, 9)
    assert (summary["enrolled"], summary["already_present"]) == (4, 2)
    assert summary["problems"] == {
        "no_face": ["dee/blank.png"],
        "several_faces": ["cy/group.jpg"],
        "unreadable": ["dee/notes.jpg"],
        "conflicts": [],
        "spoof_suspected": [],  # liveness off: nothing judged
    }
    code, out, _ = run(capsys, *argv)
    again = json.loads(out)
    assert (again["enrolled"], again["already_present"]) == (0, 6)  # resumable: nothing twice
    with open_store(db) as store:
        assert {s.name: s.faces for s in store.subjects("staff")} == {"ann": 3, "cy": 2, "dee": 1}
        stored = {f.image_sha256 for s in store.subjects("staff") for f in store.faces("staff", s.id)}
    assert stored == {image_sha256(photo(n)) for names in PEOPLE.values() for n in names}
    result = recognizer.identify(photo("img15.jpg"), db, gallery="staff", k=3)  # cy, not enrolled
    expected = max(float(recognizer.embed(photo("img15.jpg")) @ recognizer.embed(photo(n))) for n in PEOPLE["cy"])
    cy = next(m for m in result.matches if m.name == "cy")
    assert cy.similarity == pytest.approx(expected, abs=1e-5)
    code, out, err = run(capsys, *argv[:-1], "--largest-face")  # text summary; the group photo's largest face now
    assert code == 0 and "enrolled" in out and "no face: dee/blank.png" in err
    with open_store(db) as store:
        assert store.find_subject("staff", "cy").faces == 3  # type: ignore[union-attr]


def test_store_crops_then_reembed_with_the_cli(
    capsys: pytest.CaptureFixture[str], model_file: Path, folder: Path, tmp_path: Path
) -> None:
    db = tmp_path / "g.sqlite"
    base = ("--model", model_file)
    assert run(capsys, "enroll", "--db", db, "--folder", folder, "--store-crops", *base)[0] == 0
    assert run(capsys, "enroll", "--db", db, "--gallery", "plain", "zed", photo("img5.jpg"), *base)[0] == 0
    code, out, _ = run(capsys, "gallery", "--db", db, "reembed", *base, "--no-flip", "--json")
    record = json.loads(out)
    assert code == 0 and record["faces"] == 6 and record["model"]["flip"] is False
    no_flip = FaceRecognizer(model_file, flip=False, device="cpu")
    result = no_flip.identify(photo("img2.jpg"), db, k=1)
    assert result.matches[0].name == "ann" and result.matches[0].similarity == pytest.approx(1.0, abs=1e-5)
    code, _, err = run(capsys, "gallery", "--db", db, "reembed", "--gallery", "plain", *base)
    assert code == 2 and "have no stored crop" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "gallery", "--db", db, "list", "--json")
    rows = {g["name"]: (g["faces"], g["faces_with_crops"]) for g in json.loads(out)["galleries"]}
    assert rows == {"default": (6, 6), "plain": (1, 0)}


def test_bulk_enrolment_errors(capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    code, _, err = run(capsys, "enroll", "--db", db, "--folder", tmp_path / "none", "--model", model_file)
    assert code == 2 and "no such folder" in err
    (tmp_path / "flat").mkdir()
    shutil.copy(photo("img1.jpg"), tmp_path / "flat")
    code, _, err = run(capsys, "enroll", "--db", db, "--folder", tmp_path / "flat", "--model", model_file)
    assert code == 2 and "one sub-folder per person" in err
    code, _, err = run(capsys, "enroll", "--db", db, "ann", "--folder", tmp_path / "flat", "--model", model_file)
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "enroll", "--db", db, "ann", "--model", model_file)
    assert code == 2 and "at least one photo" in err
    assert not db.exists()
