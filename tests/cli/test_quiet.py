"""A quiet console: with the mobile extra, ``enrol`` and ``identify`` as a new user runs them print nothing on stderr
but the package's own messages (no "Failed to load" from torchao, no torch deprecations, no ExecuTorch start-up
lines), the inference path does not import the exporter, and real errors still show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require_module, shared_path
from tests.helpers.photos import photo
from tests.helpers.service import cli


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_module("executorch", "mobile")
    from ghostfacenets.model_io import convert_keras

    h5 = shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5")
    return convert_keras(h5, tmp_path_factory.mktemp("model") / "v1_w1_s2.safetensors")


def test_enrol_and_identify_print_only_their_own_lines(model_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "people.sqlite"
    enrolled = cli("enroll", "--db", str(db), "--model", str(model_file), "alice", str(photo("img1.jpg")))
    assert enrolled.stderr == ""
    identified = cli("identify", "--db", str(db), "--model", str(model_file), str(photo("img2.jpg")))
    assert identified.stderr == "" and identified.stdout.strip()


def test_running_programs_leaves_the_exporter_unloaded(model_file: Path) -> None:
    """The programs are cached by the test above (or lowered here): loading and running them imports neither
    ExecuTorch's exporter nor torchao."""
    code = f"""
import sys
from ghostfacenets.pipeline import FaceRecognizer
recognizer = FaceRecognizer({str(model_file)!r}, detector_backend="executorch")  # both as ExecuTorch programs
recognizer.embed({str(photo("img5.jpg"))!r})
loaded = sorted(m for m in sys.modules if m.startswith(("torchao", "executorch.exir", "litert_torch")))
print(recognizer.embedder.name, recognizer.detector.backend, loaded)
"""
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)  # may lower
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and run.returncode == 0, first.stderr + run.stderr
    assert run.stdout.strip().endswith("executorch []") and "(executorch)" in run.stdout, run.stdout
    assert run.stderr == ""


def test_real_errors_still_show(model_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pte"
    broken.write_bytes(b"not a program" * 100)
    result = cli(
        "identify", "--db", str(tmp_path / "x.sqlite"), "--model", str(broken), str(photo("img2.jpg")), check=False
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "broken.pte" in result.stderr, result.stderr
