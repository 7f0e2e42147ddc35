"""Running a model on face crops: embedders, the one backend rule (:func:`load_embedder`), fast inference paths."""

from .embedders import (
    BACKENDS,
    FILE_RUNTIMES,
    Embedder,
    OnnxEmbedder,
    TorchEmbedder,
    check_images,
    default_device,
    embed_images,
    load_embedder,
    resolve_device,
)
from .fast import FastEmbedder, optimize_for_inference

__all__ = [
    "BACKENDS",
    "FILE_RUNTIMES",
    "Embedder",
    "FastEmbedder",
    "OnnxEmbedder",
    "TorchEmbedder",
    "check_images",
    "default_device",
    "embed_images",
    "load_embedder",
    "optimize_for_inference",
    "resolve_device",
]
