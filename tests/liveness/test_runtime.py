"""Every way the liveness model runs (the one backend rule) and every exported file against eager PyTorch and the
reference, on real patches; and the files' contract and metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.errors import GhostFaceNetsError, ModelFileError
from ghostfacenets.liveness import LivenessChecker, export_liveness, load_liveness, load_liveness_model
from ghostfacenets.liveness.crop import liveness_patches, reference_box
from tests.helpers import require_module
from tests.helpers.liveness import SAMPLES, read_bgr
from tests.helpers.photos import photo

pytestmark = pytest.mark.slow  # lowers the model to ExecuTorch and converts it to LiteRT once (tens of seconds)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def faces(detector) -> list[tuple[np.ndarray, list]]:
    """(BGR image, [largest face]) of the repository's samples and some shared photos."""
    out = []
    for path in [*sorted(SAMPLES.glob("*.jpg")), photo("img1.jpg"), photo("img18.jpg")]:
        bgr = read_bgr(path)
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        out.append((bgr, sorted(detector.detect(rgb), key=lambda f: -f.area)[:1]))
    return out


@pytest.fixture(scope="module")
def patches(faces) -> tuple[np.ndarray, np.ndarray]:
    pieces = [liveness_patches(np.ascontiguousarray(bgr[..., ::-1]), found, (2.7, 4.0)) for bgr, found in faces]
    return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_module("onnx", "onnx")
    require_module("executorch", "mobile")
    require_module("litert_torch", "mobile")
    folder = tmp_path_factory.mktemp("liveness_exports")
    model = load_liveness_model()
    return {suffix: export_liveness(model, folder / f"liveness{suffix}") for suffix in (".onnx", ".pte", ".tflite")}


def test_backends_and_files_agree_with_eager(patches, exported) -> None:
    expected = load_liveness(backend="eager").probabilities(*patches)
    runs = {b: load_liveness(backend=b) for b in ("fused", "onnxruntime", "executorch", "auto")}
    runs.update({suffix: load_liveness(path) for suffix, path in exported.items()})
    assert runs["auto"].backend == "executorch"  # the mobile extra is installed: the fastest CPU path
    for name, model in runs.items():
        got = model.probabilities(*patches)
        assert got.shape == (len(patches[0]), 3) and np.abs(got - expected).max() <= TOLERANCE, name
    for suffix, runtime in ((".onnx", "onnx"), (".pte", "executorch"), (".tflite", "litert")):
        meta = runs[suffix].metadata
        assert meta["license"].startswith("Apache-2.0") and meta["threshold"]["value"] == 0.915, suffix
        assert [i["name"] for i in meta[runtime]["inputs"]] == ["patch_2_7", "patch_4_0"], suffix


def test_exported_files_equal_the_reference(faces, exported, reference) -> None:
    for suffix, path in exported.items():
        checker = LivenessChecker(path)
        assert checker.threshold.value == 0.915
        for bgr, found in faces:
            (score,) = checker.scores(np.ascontiguousarray(bgr[..., ::-1]), found)
            assert abs(score - reference.score(bgr, list(reference_box(found[0].box)))) <= TOLERANCE, suffix


def test_wrong_sources_give_one_line(tmp_path: Path, exported) -> None:
    with pytest.raises(GhostFaceNetsError, match="unknown liveness backend"):
        load_liveness(backend="cuda-graph")
    with pytest.raises(GhostFaceNetsError, match="runs with executorch, not with backend 'onnxruntime'"):
        load_liveness(exported[".pte"], backend="onnxruntime")
    with pytest.raises(ModelFileError, match="no such file"):
        load_liveness(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFileError, match="not a usable ONNX model"):
        load_liveness(tmp_path / "junk.onnx")
    model = load_liveness(backend="eager")
    with pytest.raises(GhostFaceNetsError, match="liveness patches must be uint8"):
        model.probabilities(np.zeros((1, 80, 80, 3), np.float32), np.zeros((1, 80, 80, 3), np.float32))
