"""The shipped liveness weights: the released files' tensors, unchanged, with their source and licence recorded."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ghostfacenets.errors import ModelFileError
from ghostfacenets.files import sha256_file
from ghostfacenets.liveness.model import (
    DEFAULT_THRESHOLD,
    WEIGHTS,
    convert_reference_weights,
    load_liveness_model,
    read_liveness_metadata,
    reference_state_dict,
)
from tests.helpers.liveness import MODEL_FILES, REFERENCE

PACKAGE_WEIGHTS = Path(str(WEIGHTS))


def test_shipped_tensors_are_the_released_ones() -> None:
    model = load_liveness_model()
    state = model.state_dict()
    for prefix, name in (("v2.", MODEL_FILES[0]), ("v1se.", MODEL_FILES[1])):
        released = torch.load(REFERENCE / name, map_location="cpu", weights_only=True)
        kept = {k.removeprefix("module."): v for k, v in released.items() if not k.endswith("num_batches_tracked")}
        ours = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        ours = {k: v for k, v in ours.items() if not k.endswith("num_batches_tracked")}
        assert kept.keys() == ours.keys()
        for key, tensor in kept.items():
            assert torch.equal(tensor, ours[key]), key


def test_metadata_records_source_licence_and_threshold() -> None:
    meta = read_liveness_metadata(PACKAGE_WEIGHTS)
    assert meta["source"]["commit"] == "b6d5f04ad78778917853b25c778acef6d5626d15"
    assert meta["source"]["sha256"] == {name: sha256_file(REFERENCE / name) for name in MODEL_FILES}
    assert meta["license"].startswith("Apache-2.0")
    assert meta["threshold"] == {"value": DEFAULT_THRESHOLD, "source": "default", "note": meta["threshold"]["note"]}
    assert "Silent-Face-Anti-Spoofing-APK" in meta["threshold"]["note"]
    assert [p["scale"] for p in meta["patches"]] == [2.7, 4.0]
    folder = PACKAGE_WEIGHTS.parent
    assert "Apache License" in (folder / "LICENSE").read_text() and "b6d5f04" in (folder / "NOTICE").read_text()


def test_conversion_reproduces_the_shipped_file(tmp_path: Path) -> None:
    out = convert_reference_weights(REFERENCE / MODEL_FILES[0], REFERENCE / MODEL_FILES[1], tmp_path / "w.safetensors")
    converted, shipped = load_liveness_model(out).state_dict(), load_liveness_model().state_dict()
    assert converted.keys() == shipped.keys() and all(torch.equal(converted[k], shipped[k]) for k in shipped)
    with pytest.raises(ModelFileError, match="not the weights of MiniFASNetV2"):
        convert_reference_weights(REFERENCE / MODEL_FILES[1], REFERENCE / MODEL_FILES[1], tmp_path / "x.safetensors")


class Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_refuses_pickled_code_and_foreign_files(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.conv.weight": Payload()}))
    with pytest.raises(ModelFileError, match="not a plain PyTorch state dict"):
        reference_state_dict(evil)
    with pytest.raises(ModelFileError, match="no such file"):
        load_liveness_model(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(other), metadata={"ghostfacenets": '{"format": "ghostfacenets"}'})
    with pytest.raises(ModelFileError, match="not a ghostfacenets liveness weights file"):
        load_liveness_model(other)
