"""GhostFaceNets in PyTorch: exact models, official-weight loading, evaluation, training and a face pipeline.

Public names are imported lazily so that ``import ghostfacenets`` and the CLI start quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0.dev0"  # the one place of the version (pyproject.toml reads it; CHANGELOG.md)

_EXPORTS = {
    "GhostFaceNet": "ghostfacenets.models.ghostfacenet",
    "GhostFaceNetV1": "ghostfacenets.models.ghostfacenet",
    "GhostFaceNetV2": "ghostfacenets.models.ghostfacenet",
    "GhostFaceNetConfig": "ghostfacenets.models.ghostfacenet",
    "list_models": "ghostfacenets.models.registry",
    "create_model": "ghostfacenets.models.registry",
    "load_model": "ghostfacenets.model_io",
    "save_model": "ghostfacenets.model_io",
    "read_metadata": "ghostfacenets.model_io",
    "convert_keras": "ghostfacenets.model_io",
    "count": "ghostfacenets.models.counting",
    "GhostFaceNetsError": "ghostfacenets.errors",
    "FaceRecognizer": "ghostfacenets.pipeline.recognizer",
    "evaluate_bin": "ghostfacenets.evaluate.verification",
    "embed_images": "ghostfacenets.inference",
    "load_verification_bin": "ghostfacenets.data.verification_bin",
    "fuse_model": "ghostfacenets.models.fuse",
    "FastEmbedder": "ghostfacenets.inference",
    "load_embedder": "ghostfacenets.inference",
    "export_onnx": "ghostfacenets.export.onnx",
    "LivenessChecker": "ghostfacenets.liveness.checker",
    "SpoofSuspectedError": "ghostfacenets.liveness.checker",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ghostfacenets' has no attribute {name!r}")
