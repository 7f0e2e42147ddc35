"""Preprocessing shared by every entry point: the official normalisation and the ArcFace alignment template."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

INPUT_SIZE = 112
PIXEL_MEAN = 127.5
PIXEL_STD = 128.0
# Five-point ArcFace template for 112x112 crops: left eye, right eye, nose, left and right mouth corners (x, y).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def _as_batch(images: Any) -> Any:
    """A numpy array or tensor of RGB images (N, H, W, 3), from one image (H, W, 3) or a batch; else ValueError."""
    batch = images[None] if images.ndim == 3 else images
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected RGB images shaped (N, H, W, 3), got {tuple(batch.shape)}")
    return batch


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) or one (H, W, 3) -> float32 (N, 3, H, W), normalised as (x - 127.5) / 128."""
    batch = _as_batch(images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images)))
    return (batch.permute(0, 3, 1, 2).float() - PIXEL_MEAN) / PIXEL_STD


def to_array(images: np.ndarray) -> np.ndarray:
    """:func:`to_tensor` in numpy, for the runtimes that take numpy or run their own thread pools (onnxruntime,
    LiteRT, ExecuTorch): contiguous float32 (N, 3, H, W). No torch operation runs here on purpose: one would wake
    torch's OpenMP threads, whose spinning then slows the runtime's next call (batch-1 ExecuTorch, 2 cores: 2.6 ms
    alone, 3.7-5.2 ms right after a small torch op)."""
    batch = _as_batch(np.asarray(images))
    return np.ascontiguousarray(((batch.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(0, 3, 1, 2))
