"""The ``ghostfacenets`` command line: models, info, convert, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ghostfacenets
from ghostfacenets.cli import main
from ghostfacenets.model_io import read_metadata
from tests.helpers import shared_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_32_architectures_and_the_pretrained_weights(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0 and len(out.split()) == 32
    code, out, _ = run(capsys, "models", "--pretrained", "--json")
    record = json.loads(out)[0]
    assert record["name"] == "ghostfacenetv1-1.3-1.ms1mv3-arcface" and "non-commercial" in record["license"]


def test_info_json_keys_for_a_name_and_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "ghostfacenetv1-1.3-2", "--json")
    info = json.loads(out)
    assert code == 0
    assert (info["params"], info["params_keras_total"]) == (4_037_836, 4_066_388)
    assert info["mflops"] == pytest.approx(60.79, rel=0.01) and info["mmacs"] == pytest.approx(59.32, rel=0.01)
    code, out, _ = run(capsys, "info", "ghostfacenetv1-1.3-1.ms1mv3-arcface", "--json")
    assert json.loads(out)["params"] == 4_060_260  # the released file's architecture, without downloading it
    h5 = shared_path("fixtures", "keras_reference", "v2_w1_s1", "model.h5")
    code, out, _ = run(capsys, "info", str(h5), "--json")
    assert json.loads(out)["params_keras_total"] == 4_261_424
    code, out, _ = run(capsys, "info", "ghostfacenetv2-1.3-1")
    assert "6,795,720 trainable" in out and "274.0" in out


def test_convert_writes_the_own_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    h5 = shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5")
    code, out, _ = run(capsys, "convert", str(h5), str(tmp_path / "out.safetensors"))
    assert code == 0 and "ghostfacenetv1-1-2" in out
    assert read_metadata(tmp_path / "out.safetensors")["config"]["stem_stride"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "no-such-model"], "no such file and not a pretrained name"),
        (["convert", "missing.h5", "out.safetensors"], "missing.h5: no such file"),
        (["info"], "required"),
        (["models", "--bogus"], "unrecognized arguments"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ghostfacenets.cli", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_convert_of_a_non_h5_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "photo.h5"
    bad.write_bytes(b"\xff\xd8 not hdf5")
    code, _, err = run(capsys, "convert", str(bad), str(tmp_path / "o.safetensors"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "HDF5" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from ghostfacenets.cli import COMMANDS

    for name, *_ in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: ghostfacenets" in capsys.readouterr().out


def test_a_bad_filter_pattern_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "models", "--filter", "[")
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "regular expression" in err


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"ghostfacenets {ghostfacenets.__version__}\n"
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = { attr = "ghostfacenets.__version__" }' in pyproject
