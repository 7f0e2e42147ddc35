"""Sets of aligned face crops (for int8 calibration and agreement checks) from a verification ``.bin`` or a folder, and
sets of photos (for the int8 calibration of the detector)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import GhostFaceNetsError
from .folders import IMAGE_SUFFIXES
from .images import fit_image, load_image
from .transforms import INPUT_SIZE
from .verification_bin import load_verification_bin


def spread(n: int, limit: int | None) -> np.ndarray:
    """Indices of ``limit`` items spread evenly over ``n`` (all of them when ``limit`` is None or at least ``n``)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise GhostFaceNetsError(f"the number of images must be positive, got {limit}")
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def load_face_crops(source: str | Path, limit: int | None = None, size: int = INPUT_SIZE) -> np.ndarray:
    """Aligned face crops uint8 RGB (N, size, size, 3) from a verification ``.bin`` or a folder of images (searched
    recursively, sorted); with ``limit``, that many spread evenly over the set. Crops of another size are fitted
    as training fits them (:func:`ghostfacenets.data.images.fit_image`, "pad": aspect kept, black borders)."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".bin":
        images = load_verification_bin(source)[0]
        return np.stack([fit_image(images[i], size) for i in spread(len(images), limit)])
    if not source.is_dir():
        raise GhostFaceNetsError(f"{source}: give a folder of aligned face crops or a verification .bin")
    paths = _images(source)
    return np.stack([fit_image(load_image(paths[i]), size) for i in spread(len(paths), limit)])


def _images(folder: Path) -> list[Path]:
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not paths:
        raise GhostFaceNetsError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def load_photos(source: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Photos uint8 RGB (H, W, 3) of a folder (searched recursively, sorted), as they are; with ``limit``, that many
    spread evenly over the folder."""
    source = Path(source)
    if not source.is_dir():
        raise GhostFaceNetsError(f"{source}: give a folder of photos")
    paths = _images(source)
    return [load_image(paths[i]) for i in spread(len(paths), limit)]
