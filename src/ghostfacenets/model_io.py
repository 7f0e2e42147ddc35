"""The package's own model format (safetensors weights + JSON metadata in the header) and ``load_model``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .errors import ModelFileError
from .files import atomic_path, sha256_file, written_by
from .models.ghostfacenet import GhostFaceNet, GhostFaceNetConfig, build_model
from .models.registry import ARCHITECTURES, PRETRAINED, architecture_name, default_preprocessing

FORMAT = "ghostfacenets"
FORMAT_VERSION = 1
METADATA_KEY = "ghostfacenets"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


UNKNOWN_LICENSE = "unknown: check the terms of the weights' source and of their training data"


def base_metadata(config: GhostFaceNetConfig) -> dict[str, Any]:
    """Metadata every saved model carries, before source, training and licence details are added; the package
    version is the one writing the file."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **written_by(),
        "architecture": architecture_name(config.version, config.width, config.stem_stride),
        "config": config.to_dict(),
        "preprocessing": default_preprocessing(),
    }


def model_metadata(model: GhostFaceNet, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``model.metadata`` and ``extra`` over the defaults; architecture facts always from the model itself."""
    base = base_metadata(model.config)
    meta = {**base, **model.metadata, **(extra or {})}
    meta.update({k: v for k, v in base.items() if k != "preprocessing"})
    meta.setdefault("license", UNKNOWN_LICENSE)
    return meta


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over a model's state dict (names, dtypes, shapes, values), leaving out BatchNorm's
    ``num_batches_tracked`` counters, which do not change the output: equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.endswith("num_batches_tracked"):
            continue
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(model: GhostFaceNet, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` atomically as safetensors with its metadata (merged over ``model.metadata``)."""
    from .models.fuse import is_fused

    if is_fused(model):
        raise ModelFileError("a BN-fused model cannot be saved: save the model before fusing, fuse after loading")
    path = Path(path)
    meta = model_metadata(model, metadata)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a model file in the package's own format."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    if raw is None:
        raise ModelFileError(f"{path}: safetensors file without ghostfacenets metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: damaged ghostfacenets metadata ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("format_version", 0), int):
        raise ModelFileError(f"{path}: damaged ghostfacenets metadata (not a JSON object with an integer version)")
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: unsupported model file format {meta.get('format')} v{meta.get('format_version')}"
        )
    return meta


def _load_own(path: Path) -> GhostFaceNet:
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        model = build_model(GhostFaceNetConfig(**meta["config"]), initialise=False)
        model.load_state_dict(load_file(str(path)), strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: weights do not fit the recorded architecture ({exc})") from None
    model.metadata = meta
    return model


def _load_keras(path: Path) -> GhostFaceNet:
    from .convert.keras_h5 import load_keras_h5

    model, keras = load_keras_h5(path)
    digest = sha256_file(path)
    known = next((w for w in PRETRAINED.values() if w.sha256 == digest), None)
    meta = known.metadata() if known else {}
    meta.update(base_metadata(model.config))
    meta["source"] = {
        **meta.get("source", {}),
        "path": str(path),
        "sha256": digest,
        "format": "keras-h5",
        "keras_version": keras.keras_version,
    }
    meta.setdefault("license", UNKNOWN_LICENSE)
    model.metadata = meta
    return model


def convert_keras(h5_path: str | Path, out_path: str | Path) -> Path:
    """Convert an official Keras ``.h5`` into the package's own format."""
    return save_model(_load_keras(Path(h5_path)), out_path)


def pretrained_path(name: str, progress: bool = True) -> Path:
    """Path of pretrained weights ``name`` in the package's own format, downloading the release file and converting
    it on first use (cached beside it, see :mod:`ghostfacenets.hub`)."""
    from .hub import cache_dir, release_file

    if name not in PRETRAINED:
        raise ModelFileError(f"unknown pretrained weights {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    converted = cache_dir() / f"{name}.safetensors"
    if converted.exists():
        try:
            if read_metadata(converted).get("source", {}).get("sha256") == PRETRAINED[name].sha256:
                return converted
        except ModelFileError:
            pass  # a damaged cache entry is rebuilt below
    return convert_keras(release_file(name, progress), converted)


def load_model(source: str | Path, device: str | torch.device = "cpu") -> GhostFaceNet:
    """A ready model in eval mode from a Keras ``.h5``, an own-format ``.safetensors`` file or a pretrained name."""
    text = str(source)
    path = Path(source)
    if text in PRETRAINED and not path.exists():
        model = _load_own(pretrained_path(text))
    elif path.is_file():
        with open(path, "rb") as f:
            magic = f.read(8)
        model = _load_keras(path) if magic == _HDF5_MAGIC else _load_own(path)
    elif path.is_dir():
        raise ModelFileError(f"{path} is a folder; give a model file")
    elif text in ARCHITECTURES:
        raise ModelFileError(
            f"{text!r} is an architecture without weights: use ghostfacenets.create_model({text!r}) for a "
            f"fresh model, or one of the pretrained names {sorted(PRETRAINED)}"
        )
    else:
        raise ModelFileError(
            f"{text!r}: no such file and not a pretrained name (pretrained: {', '.join(sorted(PRETRAINED))})"
        )
    return model.to(device).eval()
