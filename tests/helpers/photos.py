"""Real photos and faces of ../shared for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import cv2

from . import shared_path

PHOTOS = "data/deepface_testpairs"


def photo(name: str) -> Path:
    """A real photo of ../shared/data/deepface_testpairs."""
    return shared_path(PHOTOS, name)


def orl_folder(root: Path, subjects: int = 6, per_subject: int = 4) -> Path:
    """An identity folder of ORL faces (``subjects`` people, ``per_subject`` images each), padded to 112 wide."""
    faces = shared_path("data", "att_faces")
    for s in range(1, subjects + 1):
        (root / f"person{s:02d}").mkdir(parents=True)
        for k in range(1, per_subject + 1):
            grey = cv2.imread(str(faces / f"s{s}" / f"{k}.pgm"), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(
                str(root / f"person{s:02d}" / f"{k}.png"), cv2.copyMakeBorder(grey, 0, 0, 10, 10, cv2.BORDER_REFLECT)
            )
    return root
