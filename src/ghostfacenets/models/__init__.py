"""GhostFaceNet architectures, the registry of variants and pretrained weights, and model counting."""

from .ghostfacenet import GhostFaceNet, GhostFaceNetConfig, GhostFaceNetV1, GhostFaceNetV2, build_model
from .registry import ARCHITECTURES, PRETRAINED, create_model, list_models

__all__ = [
    "ARCHITECTURES",
    "PRETRAINED",
    "GhostFaceNet",
    "GhostFaceNetConfig",
    "GhostFaceNetV1",
    "GhostFaceNetV2",
    "build_model",
    "create_model",
    "list_models",
]
