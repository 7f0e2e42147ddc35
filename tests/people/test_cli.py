"""``ghostfacenets people`` and ``evaluate --clustering`` from the command line: real photos, a real model file,
JSON for scripts, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ghostfacenets.cli import main
from tests.helpers import shared_path
from tests.helpers.photos import orl_folder, photo

PHOTOS = ("img1.jpg", "img2.jpg", "img4.jpg", "img3.jpg", "img12.jpg")
# the random test model passes no quality gate and links at no threshold: these settings group every face
FUSED = ("--backend", "fused", "--device", "cpu")  # no ExecuTorch lowering of the test model in every test
EVERYTHING = ("--link", "-1", "--join", "-1", "--min-quality", "0", "--min-faces", "2", "--join-links", "1")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official Keras GhostFaceNetV1-1-2 test model (random weights) in the package's own format."""
    from ghostfacenets.model_io import convert_keras

    h5 = shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5")
    return convert_keras(h5, tmp_path_factory.mktemp("model") / "v1_w1_s2.safetensors")


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, text: str) -> None:
    assert code == 2 and err.count("\n") == 1 and "error:" in err and text in err, err


def test_add_list_name_identify_and_rerun(capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(photo(name), folder / "trip" / name)
    db = tmp_path / "library.sqlite"
    common = ("--db", db, "--gallery", "fam")
    code, out, _ = run(capsys, "people", "add", folder, *common, "--model", model_file, *FUSED, "--store-crops",
                       *EVERYTHING, "--json")  # fmt: skip
    added = json.loads(out)
    assert code == 0 and added["photos_added"] == len(PHOTOS) and added["faces_added"] == len(PHOTOS)
    assert added["summary"]["people"] == 1 and added["summary"]["unsorted"] == 0
    code, out, _ = run(capsys, "people", "add", folder, *common, "--model", model_file, *FUSED, "--json")
    assert code == 0 and json.loads(out)["already_done"] == len(PHOTOS) and json.loads(out)["faces_added"] == 0

    code, out, _ = run(capsys, "people", "list", *common, "--json")
    (person,) = json.loads(out)["people"]
    assert person["faces"] == len(PHOTOS) and person["name"] is None and person["cover_face"] is not None
    code, out, _ = run(capsys, "people", "show", person["id"], *common, "--json")
    assert sorted(f["reference"] for f in json.loads(out)["faces"]) == sorted(f"trip/{n}" for n in PHOTOS)
    assert all(f["has_crop"] for f in json.loads(out)["faces"])
    code, out, _ = run(capsys, "people", "name", person["id"], "Ada", *common)
    assert code == 0 and out.startswith("named: person") and "Ada" in out
    code, out, _ = run(capsys, "identify", photo("img3.jpg"), *common, "--model", model_file, *FUSED, "--json")
    assert code == 0 and json.loads(out)["identity"] == "Ada"

    code, out, _ = run(capsys, "people", "settings", *common, "--json")
    assert json.loads(out)["settings"]["link"] == -1.0 and json.loads(out)["settings"]["min_faces"] == 2
    code, out, _ = run(capsys, "people", "cluster", *common, "--full")
    assert code == 0 and "people (1 named)" in out


def test_people_errors_are_one_line(capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "library.sqlite"
    one_line_error(*run(capsys, "people", "list", "--db", db)[::2], "no such gallery file")
    code, _, err = run(capsys, "people", "add", tmp_path / "nothing-here", "--db", db, "--model", model_file, *FUSED)
    one_line_error(code, err, "no such file or folder")
    run(capsys, "people", "add", photo("img1.jpg"), "--db", db, "--model", model_file, *FUSED)
    one_line_error(*run(capsys, "people", "name", "999", "X", "--db", db)[::2], "no person 999")
    one_line_error(*run(capsys, "people", "reject", "999", "--db", db)[::2], "no unlabelled face 999")
    one_line_error(*run(capsys, "people", "list", "--db", db, "--gallery", "other")[::2], "no gallery named 'other'")
    one_line_error(*run(capsys, "people", "settings", "--db", db, "--link", "2")[::2], "cosine in [-1, 1]")


def test_evaluate_clustering(capsys: pytest.CaptureFixture[str], model_file: Path, tmp_path: Path) -> None:
    orl_folder(tmp_path / "a", subjects=4, per_subject=4)
    orl_folder(tmp_path / "b", subjects=3, per_subject=4)
    out_json = tmp_path / "report.json"
    code, out, _ = run(capsys, "evaluate", "--model", model_file, *FUSED, "--clustering", tmp_path / "a", "--tune-on",
                       tmp_path / "b", "--json", out_json, "--plot", tmp_path / "erc.png")  # fmt: skip
    assert code == 0 and "BCubed P" in out and "dbscan" in out and "hdbscan" in out and "error" not in out
    report = json.loads(out_json.read_text())
    scores = report["sets"]["a"]["clustering"]
    assert set(scores) == {"people", "dbscan", "hdbscan"} and scores["people"]["faces"] == 16
    assert scores["people"]["people"] == 4 and report["baselines"]["tuned_on"] == "b"
    assert report["sets"]["a"]["error_versus_reject"]["quality"]["fractions"][0] == 0.0
    assert (tmp_path / "erc.png").stat().st_size > 1000
    code, _, err = run(capsys, "evaluate", "--model", model_file, "--clustering", tmp_path / "a", "--bin", "x.bin")
    one_line_error(code, err, "evaluated on its own")
    one_line_error(*run(capsys, "evaluate", "--model", model_file, "--tune-on", tmp_path / "b")[::2], "--clustering")
