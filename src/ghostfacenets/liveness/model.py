"""The liveness model: MiniFASNetV2 (patch at 2.7x the face box) and MiniFASNetV1SE (4x) fused as the authors fuse
them (the mean of their softmax outputs), its weights file in the package's own format and the conversion of the
released ``.pth`` files into it.

The weights ship inside the package (``weights/minifasnet.safetensors``, 3.5 MB; Apache-2.0, ``weights/LICENSE`` and
``weights/NOTICE``): converted once from the files of minivision-ai/Silent-Face-Anti-Spoofing by
:func:`convert_reference_weights`; nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from ..files import atomic_path, sha256_file, written_by
from ..models.minifasnet import INPUT_SIZE, MiniFASNet, fuse_minifasnet, minifasnet_v1se, minifasnet_v2

FORMAT = "ghostfacenets-liveness"
FORMAT_VERSION = 1
METADATA_KEY = "ghostfacenets"
ARCHITECTURE = "minifasnet-v2-2.7+v1se-4.0"
SOURCE_REPOSITORY = "https://github.com/minivision-ai/Silent-Face-Anti-Spoofing"
SOURCE_COMMIT = "b6d5f04ad78778917853b25c778acef6d5626d15"
LICENSE = (
    "Apache-2.0 (weights and architecture by Minivision, minivision-ai/Silent-Face-Anti-Spoofing; see "
    "ghostfacenets/liveness/weights/LICENSE and NOTICE)"
)
# The authors' Android demo (minivision-ai/Silent-Face-Anti-Spoofing-APK, the deployment of these two models): a face
# is real when the mean of the two models' class-1 probabilities is above this threshold.
DEFAULT_THRESHOLD = 0.915
DEFAULT_THRESHOLD_SOURCE = (
    "the authors' Android demo of these two models (minivision-ai/Silent-Face-Anti-Spoofing-APK at commit "
    "83329c97ba1153e2bbdd374dee1b5d33a7367dc7, MainActivity.kt defaultThreshold = 0.915, applied to the mean of "
    "the two models' real-face probabilities as here); not calibrated on any data here: run `ghostfacenets "
    "calibrate --liveness` on your own live and attack photos"
)
WEIGHTS = resources.files("ghostfacenets.liveness") / "weights" / "minifasnet.safetensors"


@dataclass(frozen=True)
class Patch:
    """One member of the fusion: which network, the crop scale around the face box, and its weights' prefix."""

    name: str
    scale: float
    prefix: str
    reference_file: str


PATCHES = (
    Patch("MiniFASNetV2", 2.7, "v2.", "resources/anti_spoof_models/2.7_80x80_MiniFASNetV2.pth"),
    Patch("MiniFASNetV1SE", 4.0, "v1se.", "resources/anti_spoof_models/4_0_0_80x80_MiniFASNetV1SE.pth"),
)


class MiniFASNetFusion(nn.Module):
    """The two released MiniFASNets as one model: two (N, 3, 80, 80) float32 BGR 0-255 patches (2.7x and 4x the
    face box) -> (N, 3) class probabilities, the mean of the two softmax outputs (class 1 = real face)."""

    def __init__(self) -> None:
        super().__init__()
        self.v2: nn.Module = minifasnet_v2()
        self.v1se: nn.Module = minifasnet_v1se()
        self.metadata: dict[str, Any] = {}

    def forward(self, patch_2_7: torch.Tensor, patch_4_0: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(self.v2(patch_2_7), dim=1) + torch.softmax(self.v1se(patch_4_0), dim=1)) / 2

    def fused(self) -> MiniFASNetFusion:
        """An inference-only copy with every BatchNorm folded (``models.minifasnet.fuse_minifasnet``)."""
        copy = MiniFASNetFusion()
        assert isinstance(self.v2, MiniFASNet) and isinstance(self.v1se, MiniFASNet)
        copy.v2, copy.v1se = fuse_minifasnet(self.v2), fuse_minifasnet(self.v1se)
        copy.metadata = dict(self.metadata)
        return copy.eval().requires_grad_(False)


def base_metadata() -> dict[str, Any]:
    """What every liveness weights file and export says about the model, its input and its output."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **written_by(),
        "architecture": ARCHITECTURE,
        "task": "passive (single-frame) face presentation-attack detection",
        "patches": [
            {"network": p.name, "scale": p.scale, "size": [INPUT_SIZE, INPUT_SIZE], "prefix": p.prefix} for p in PATCHES
        ],
        "preprocessing": {
            "crop": "the face box (x, y, w + 1, h + 1 of the detector's x1, y1, x2, y2, truncated to integers) scaled "
            "by each patch's scale about its centre, shifted inside the image, resized to 80x80 with OpenCV's "
            "bilinear resize (Silent-Face-Anti-Spoofing's CropImage)",
            "channels": "BGR",
            "range": "0-255, not normalised",
            "layout": "NCHW",
        },
        "output": "class probabilities (N, 3): the mean of the two networks' softmax outputs; class 1 = real face",
        "decision": "live if the class-1 probability (the liveness score) is above the threshold",
        "source": {
            "repository": SOURCE_REPOSITORY,
            "commit": SOURCE_COMMIT,
            "files": [p.reference_file for p in PATCHES],
            "paper_or_readme": "Silent-Face-Anti-Spoofing README: APK model TPR 97.8 % at FPR 1e-5 on the "
            "authors' own (unpublished) data",
        },
        "license": LICENSE,
        "threshold": {"value": DEFAULT_THRESHOLD, "source": "default", "note": DEFAULT_THRESHOLD_SOURCE},
    }


def read_liveness_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a liveness weights file in the package's format."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        meta = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a ghostfacenets liveness weights file")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise ModelFileError(f"{path}: unsupported liveness file format version {meta.get('format_version')}")
    return meta


def load_liveness_model(path: str | Path | None = None) -> MiniFASNetFusion:
    """The fused MiniFASNets of a liveness weights file (default: the shipped one), in eval mode, with the file's
    metadata (threshold included) as ``model.metadata``."""
    from safetensors.torch import load_file

    with resources.as_file(WEIGHTS) as shipped:
        source = Path(path) if path is not None else shipped
        if not source.is_file():
            raise ModelFileError(f"{source}: no such file")
        meta = read_liveness_metadata(source)
        model = MiniFASNetFusion()
        try:
            model.load_state_dict(load_file(str(source)), strict=True)
        except (RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{source}: weights do not fit the MiniFASNets ({exc})") from None
    model.metadata = meta
    return model.eval()


def save_liveness_model(model: MiniFASNetFusion, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the liveness model atomically as safetensors with its metadata (``metadata`` over ``model.metadata``,
    the format facts and the writing package's version refreshed)."""
    from safetensors.torch import save_file

    meta = {**base_metadata(), **model.metadata, **(metadata or {})}
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, **written_by()})
    tensors = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return path


def reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A released ``.pth`` state dict (DataParallel's ``module.`` prefix removed), read with
    ``torch.load(weights_only=True)``: tensors only, no pickled code."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors of every kind, refused classes included
        raise ModelFileError(f"{path}: not a plain PyTorch state dict ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: not a state dict of tensors")
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


def convert_reference_weights(v2_path: str | Path, v1se_path: str | Path, out: str | Path) -> Path:
    """Convert the released ``2.7_80x80_MiniFASNetV2.pth`` and ``4_0_0_80x80_MiniFASNetV1SE.pth`` into one liveness
    weights file, recording their sha256 (how the shipped file was made)."""
    model = MiniFASNetFusion()
    for network, path in ((model.v2, v2_path), (model.v1se, v1se_path)):
        try:
            network.load_state_dict(reference_state_dict(path), strict=True)
        except RuntimeError as exc:
            raise ModelFileError(
                f"{path}: not the weights of {getattr(network, 'name', 'a MiniFASNet')} ({exc})"
            ) from None
    meta = base_metadata()
    meta["source"]["sha256"] = {Path(p).name: sha256_file(p) for p in (v2_path, v1se_path)}
    meta["converted"] = datetime.now(timezone.utc).date().isoformat()
    return save_liveness_model(model, out, meta)
