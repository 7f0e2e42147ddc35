"""RFW (Racial Faces in the Wild) and any demographic set in its layout: 1:1 verification per group and the spread
of accuracy across groups (``evaluate.fairness``).

Layout (``root`` or ``root/test``)::

    data/<group>/<identity>/<identity>_<NNNN>.jpg      the photos (RFW: African, Asian, Caucasian, Indian)
    txts/<group>/<group>_pairs.txt                     LFW-style pairs, tab-separated: "<id> <n1> <n2>" (same
                                                       person) or "<id1> <n1> <id2> <n2>" (different people)
    txts/<group>/<group>_lmk.txt                       per photo "<path ending in <id>/<file>> <one field> x1 y1 ..
                                                       x5 y5": five landmarks, used to align each photo to the
                                                       ArcFace 112x112 template (optional: without it the photos
                                                       must already be aligned crops of the model's size)

Every group folder with a pairs file is a group, whatever its name. Per group: the metrics of a ``.bin`` set over
that group's pairs in file order (10-fold accuracy on contiguous folds: RFW's 6,000 pairs make 10 folds of 600).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.align import align_face
from ..data.folders import IMAGE_SUFFIXES
from ..data.images import load_image
from ..errors import GhostFaceNetsError
from ..inference import load_embedder
from .distributed import ImageJob, embed_job, stack_crops
from .fairness import DEFAULT_FAR, GroupedEvaluation, GroupedPairSet


class RFWError(GhostFaceNetsError):
    """A folder that does not have RFW's layout."""


def find_groups(root: str | Path) -> tuple[Path, list[str]]:
    """(the folder holding ``data/`` and ``txts/``, the sorted group names: folders of ``txts/`` with a pairs file)."""
    root = Path(root)
    base = root / "test" if (root / "test" / "txts").is_dir() else root
    txts, data = base / "txts", base / "data"
    if not txts.is_dir() or not data.is_dir():
        raise RFWError(
            f"{root}: expected data/ and txts/ (or test/data/ and test/txts/): RFW's layout, see docs/evaluation.md"
        )
    groups = sorted(p.name for p in txts.iterdir() if (p / f"{p.name}_pairs.txt").is_file())
    if not groups:
        raise RFWError(f"{txts}: no <group>/<group>_pairs.txt")
    for group in groups:
        if not (data / group).is_dir():
            raise RFWError(f"{data / group}: missing (the photos of group {group})")
    return base, groups


def _image(folder: Path, identity: str, number: str, where: str) -> Path:
    """``folder/<identity>/<identity>_<number as %04d>`` with whichever image suffix exists (.jpg first)."""
    try:
        stem = f"{identity}_{int(number):04d}"
    except ValueError:
        raise RFWError(f"{where}: image number {number!r} is not an integer") from None
    for suffix in (".jpg", *sorted(IMAGE_SUFFIXES - {".jpg"})):
        path = folder / identity / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise RFWError(f"{where}: no image {folder / identity / stem}.jpg")


def read_group_pairs(pairs_file: Path, photos: Path) -> tuple[list[Path], list[Path], np.ndarray]:
    """(images A, images B, same-person labels) of one group's pairs file, in file order."""
    images_a, images_b, labels = [], [], []
    for number, line in enumerate(pairs_file.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.strip().split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        where = f"{pairs_file}:{number}"
        if not fields or not line.strip():
            continue
        if len(fields) == 3:
            a, b = _image(photos, fields[0], fields[1], where), _image(photos, fields[0], fields[2], where)
        elif len(fields) == 4:
            a, b = _image(photos, fields[0], fields[1], where), _image(photos, fields[2], fields[3], where)
        else:
            raise RFWError(f"{where}: expected 'id n1 n2' or 'id1 n1 id2 n2', got {line.strip()!r}")
        images_a.append(a)
        images_b.append(b)
        labels.append(len(fields) == 3)
    if not labels:
        raise RFWError(f"{pairs_file}: no pairs")
    return images_a, images_b, np.array(labels, dtype=bool)


def read_landmarks(path: Path) -> dict[str, np.ndarray]:
    """ "<identity>/<file>" -> five (x, y) landmarks (5, 2), from the last ten numbers of each line."""
    points = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = np.array([float(v) for v in fields[-10:]], dtype=np.float64)
        except ValueError:
            values = np.empty(0)
        parts = fields[0].replace("\\", "/").split("/")
        if len(fields) < 11 or values.size != 10 or len(parts) < 2:
            raise RFWError(f"{path}:{number}: expected '<.../identity/file> <field> x1 y1 ... x5 y5'")
        points[f"{parts[-2]}/{parts[-1]}"] = values.reshape(5, 2)
    return points


def _load_job(name: str, paths: list[Path], landmarks: dict[Path, np.ndarray | None]) -> ImageJob:
    """Photos aligned by their landmarks when they have some, else read as they are."""

    def crop(path: Path) -> np.ndarray:
        points = landmarks[path]
        image = load_image(path)
        return image if points is None else align_face(image, points)

    return ImageJob(
        name, len(paths), lambda indices: stack_crops([crop(paths[i]) for i in indices], [paths[i] for i in indices])
    )


def read_rfw(root: str | Path) -> GroupedPairSet:
    """Every group's pairs, photos and landmarks (checked before any embedding); each photo is embedded once."""
    base, groups = find_groups(root)
    index: dict[Path, int] = {}
    landmarks: dict[Path, np.ndarray | None] = {}
    rows: list[int] = []
    labels, names = [], []
    for group in groups:
        images_a, images_b, issame = read_group_pairs(
            base / "txts" / group / f"{group}_pairs.txt", base / "data" / group
        )
        lmk_file = base / "txts" / group / f"{group}_lmk.txt"
        points = read_landmarks(lmk_file) if lmk_file.is_file() else None
        for path in [*images_a, *images_b]:
            if path in landmarks:
                continue
            key = f"{path.parent.name}/{path.name}"
            if points is not None and key not in points:
                raise RFWError(f"{lmk_file}: no landmarks for {key}")
            landmarks[path] = None if points is None else points[key]
        rows.extend(index.setdefault(p, len(index)) for pair in zip(images_a, images_b) for p in pair)
        labels.append(issame)
        names.append(np.full(len(issame), group))
    name = Path(root).resolve().name
    paths = list(index)
    return GroupedPairSet(
        name,
        _load_job(name, paths, landmarks),
        np.array(rows, dtype=np.int64).reshape(-1, 2),
        np.concatenate(labels),
        np.concatenate(names),
    )


def evaluate_rfw(
    model_or_embedder: Any,
    root: str | Path,
    flip: bool = True,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
    far: float = DEFAULT_FAR,
) -> GroupedEvaluation:
    """Per-group verification, the spread across groups and the rates at one threshold (``evaluate.fairness``)."""
    rfw = read_rfw(root)
    embedder = load_embedder(model_or_embedder, device)
    return rfw.evaluate(embed_job(embedder, rfw.job, flip, batch_size, progress), flip, far)
