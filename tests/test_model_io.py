"""The package's own format, load_model's dispatch, and the pretrained-weights cache (offline, file:// only)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import ghostfacenets
from ghostfacenets import hub
from ghostfacenets.errors import DownloadError, ModelFileError
from ghostfacenets.model_io import read_metadata, save_model
from ghostfacenets.models import registry
from tests.helpers import shared_path

OFFICIAL = "ghostfacenetv1-1.3-1.ms1mv3-arcface"


def test_own_format_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ghostfacenets.create_model("ghostfacenetv2-0.5-2", embedding_size=128).eval()
    path = save_model(model, tmp_path / "m.safetensors", {"training_data": "unit test", "license": "MIT"})
    meta = read_metadata(path)
    assert meta["architecture"] == "ghostfacenetv2-0.5-2"
    assert meta["config"]["embedding_size"] == 128
    assert meta["preprocessing"]["normalization"]["std"] == 128.0
    assert meta["training_data"] == "unit test"
    assert meta["ghostfacenets_version"] == ghostfacenets.__version__
    loaded = ghostfacenets.load_model(path)
    assert not loaded.training and loaded.metadata["license"] == "MIT"
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left nothing behind


def test_a_saved_file_records_the_version_that_wrote_it(tmp_path: Path) -> None:
    model = ghostfacenets.create_model("ghostfacenetv1-0.5-2")
    model.metadata = {"ghostfacenets_version": "0.0.1"}  # as loaded from a file an older version wrote
    path = save_model(model, tmp_path / "m.safetensors", {"ghostfacenets_version": "0.0.2"})
    assert read_metadata(path)["ghostfacenets_version"] == ghostfacenets.__version__


def test_convert_keras_then_load_equals_direct_load(tmp_path: Path) -> None:
    h5 = shared_path("fixtures", "keras_reference", "v1_w1.3_s1", "model.h5")
    out = ghostfacenets.convert_keras(h5, tmp_path / "v1.safetensors")
    meta = read_metadata(out)
    assert meta["source"]["sha256"] == hashlib.sha256(h5.read_bytes()).hexdigest()
    assert meta["config"]["gdc_bias"] is True
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(ghostfacenets.load_model(out)(x), ghostfacenets.load_model(h5)(x))


def test_load_model_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file and not a pretrained name"):
        ghostfacenets.load_model(tmp_path / "missing.h5")
    with pytest.raises(ModelFileError, match="create_model"):
        ghostfacenets.load_model("ghostfacenetv1-1.3-1")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        ghostfacenets.load_model(junk)
    with pytest.raises(ModelFileError, match="folder"):
        ghostfacenets.load_model(tmp_path)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file:// mirror holding a stand-in for the release file (the V1-1.3-1 fixture), registered by its hash."""
    h5 = shared_path("fixtures", "keras_reference", "v1_w1.3_s1", "model.h5")
    folder = tmp_path / "mirror"
    folder.mkdir()
    official = registry.PRETRAINED[OFFICIAL]
    shutil.copy(h5, folder / official.filename)
    data = h5.read_bytes()
    stand_in = replace(official, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(registry.PRETRAINED, OFFICIAL, stand_in)
    monkeypatch.setenv("GHOSTFACENETS_BASE_URL", folder.as_uri())
    return folder


def test_pretrained_downloads_checks_converts_once_then_uses_cache(
    mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ghostfacenets.load_model(OFFICIAL)
    converted = hub.cache_dir() / f"{OFFICIAL}.safetensors"
    assert converted.exists() and (hub.cache_dir() / registry.PRETRAINED[OFFICIAL].filename).exists()
    assert model.metadata["source"]["url"].endswith("GhostFaceNet_W1.3_S1_ArcFace.h5")
    assert "non-commercial" in model.metadata["license"]
    # second use: no download and no conversion
    (mirror / registry.PRETRAINED[OFFICIAL].filename).unlink()
    monkeypatch.setattr("ghostfacenets.model_io.convert_keras", lambda *a: pytest.fail("converted twice"))
    again = ghostfacenets.load_model(OFFICIAL)
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_cache_location_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHOSTFACENETS_HOME", str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("GHOSTFACENETS_HOME")
    assert hub.cache_dir() == Path.home() / ".cache" / "ghostfacenets"


def test_wrong_hash_is_refused_and_nothing_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "bad_mirror"
    folder.mkdir()
    official = registry.PRETRAINED[OFFICIAL]
    (folder / official.filename).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(official.size - 8))  # right size, wrong data
    monkeypatch.setenv("GHOSTFACENETS_BASE_URL", folder.as_uri())
    with pytest.raises(DownloadError, match="sha256"):
        ghostfacenets.load_model(OFFICIAL)
    # nothing but the links to the session's shared folders of converted programs (conftest.py)
    assert [p.name for p in hub.cache_dir().iterdir() if not p.is_symlink()] == []


def test_offline_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHOSTFACENETS_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(DownloadError) as info:
        ghostfacenets.load_model(OFFICIAL)
    message = str(info.value)
    assert "cannot download" in message and str(hub.cache_dir()) in message and "GHOSTFACENETS_BASE_URL" in message


def test_default_url_is_the_official_release() -> None:
    official = registry.PRETRAINED[OFFICIAL]
    assert hub.download_url(official) == (
        "https://github.com/HamadYA/GhostFaceNets/releases/download/v1.2/GhostFaceNet_W1.3_S1_ArcFace.h5"
    )


def test_metadata_is_plain_json_in_the_safetensors_header(tmp_path: Path) -> None:
    path = save_model(ghostfacenets.create_model("ghostfacenetv1-0.5-2"), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    header_len = int(np.frombuffer(raw[:8], "<u8")[0])
    header = json.loads(raw[8 : 8 + header_len])
    assert json.loads(header["__metadata__"]["ghostfacenets"])["format"] == "ghostfacenets"


@pytest.mark.parametrize("raw", ["{not json", "[1]", '{"format": "ghostfacenets", "format_version": "1"}'])
def test_damaged_own_metadata_is_a_model_file_error(tmp_path: Path, raw: str) -> None:
    from safetensors.torch import save_file

    from ghostfacenets.model_io import METADATA_KEY

    path = tmp_path / "damaged.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: raw})
    with pytest.raises(ModelFileError, match="damaged ghostfacenets metadata"):
        ghostfacenets.load_model(path)


def test_a_fused_model_is_not_saved(tmp_path: Path) -> None:
    from ghostfacenets.models.fuse import fuse_model

    with pytest.raises(ModelFileError, match="fused"):
        save_model(fuse_model(ghostfacenets.create_model("ghostfacenetv1-0.5-2")), tmp_path / "f.safetensors")
    assert not list(tmp_path.iterdir())


def test_every_saved_file_states_a_licence(tmp_path: Path) -> None:
    path = save_model(ghostfacenets.create_model("ghostfacenetv1-0.5-2"), tmp_path / "fresh.safetensors")
    assert read_metadata(path)["license"].startswith("unknown")
