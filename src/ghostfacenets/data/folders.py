"""Identity folders: one sub-folder per person holding that person's images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import GhostFaceNetsError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class IdentityFolder:
    """Image paths with integer labels; ``names[label]`` is the sub-folder name of that identity."""

    root: Path
    paths: list[Path]
    labels: list[int]
    names: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def scan_identity_folder(root: str | Path, min_images: int = 1) -> IdentityFolder:
    """List ``root/<identity>/<image>`` in sorted order; identities with fewer than ``min_images`` are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise GhostFaceNetsError(f"{root}: not a folder (expected one sub-folder per identity)")
    paths: list[Path] = []
    labels: list[int] = []
    names: list[str] = []
    for identity in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(
            p
            for p in identity.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if len(images) < min_images:
            continue
        label = len(names)
        names.append(identity.name)
        paths.extend(images)
        labels.extend([label] * len(images))
    if not names:
        raise GhostFaceNetsError(
            f"{root}: no identity sub-folders with at least {min_images} image(s) ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return IdentityFolder(root, paths, labels, names)
