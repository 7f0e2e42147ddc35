"""Data for the people (grouping and quality) measurements of docs/people.md, made from ../shared: nothing is
downloaded.

From the ORL faces (40 people x 10 grey 92x112 photos), each photo is put on a larger canvas (its border
replicated), so that the face detector finds it as in a photo:

* ``aligned/``: every photo detected and aligned to the ArcFace template (112x112), one sub-folder per person: the
  training data of the model the measurements use (``ghostfacenets train -c quickstart-cpu`` on people s1-s20).
* ``photos-tune/`` (people s21-s30) and ``photos-eval/`` (s31-s40): the photos on their canvas, about half of them
  degraded the way photo libraries see faces go wrong (blur, a small face, noise, heavy JPEG, darkness, an occluded
  half), seeded: the same files on every run. Settings and baselines are tuned on ``photos-tune`` and reported on
  ``photos-eval``; the model never saw either.
* ``deepface/``: the 25 in-the-wild colour photos of ../shared/data/deepface_testpairs in 9 identity folders
  (identity_groups.csv).

    python bench/people_data.py OUT_DIR
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEGRADATIONS = ("blur", "small", "noise", "jpeg", "dark", "occluded")


def on_canvas(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ORL face on a larger RGB canvas (border replicated), at a random offset."""
    top, left = int(rng.integers(40, 80)), int(rng.integers(50, 90))
    canvas = cv2.copyMakeBorder(grey, top, 120 - top, left, 140 - left, cv2.BORDER_REPLICATE)
    return np.repeat(canvas[..., None], 3, axis=2)


def degrade(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``image`` with one seeded degradation of random strength."""
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), float(rng.uniform(1.5, 4.0)))
    if kind == "small":
        scale = float(rng.uniform(0.2, 0.4))
        return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if kind == "noise":
        return np.clip(image + rng.normal(0, rng.uniform(15, 35), image.shape), 0, 255).astype(np.uint8)
    if kind == "jpeg":
        _, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(3, 10))])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    if kind == "dark":
        dark = image.astype(np.float32) * float(rng.uniform(0.12, 0.3))
        return np.clip(dark + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    if kind == "occluded":
        out = image.copy()
        h, w = out.shape[:2]
        y = int(h * rng.uniform(0.3, 0.55))
        out[y : y + int(h * 0.22), int(w * 0.2) : int(w * 0.8)] = int(rng.integers(0, 60))
        return out
    raise ValueError(kind)


def orl(person: int, index: int) -> np.ndarray:
    path = SHARED / "data" / "att_faces" / f"s{person}" / f"{index}.pgm"
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise SystemExit(f"{path}: cannot be read")
    return grey


def make_aligned(out: Path) -> tuple[int, int]:
    from ghostfacenets.data.align import align_face
    from ghostfacenets.pipeline.detect import RetinaFaceDetector

    detector = RetinaFaceDetector(threads=1)
    written = missed = 0
    for person in range(1, 41):
        rng = np.random.default_rng(person)
        folder = out / "aligned" / f"s{person}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(1, 11):
            photo = on_canvas(orl(person, index), rng)
            faces = detector.detect(photo)
            if not faces:
                missed += 1
                continue
            crop = align_face(photo, max(faces, key=lambda f: f.area).landmarks)
            cv2.imwrite(str(folder / f"{index}.png"), crop[..., ::-1])
            written += 1
    return written, missed


def make_photos(out: Path, name: str, people: range, seed: int) -> dict[str, int]:
    kinds: dict[str, int] = {"clean": 0, **dict.fromkeys(DEGRADATIONS, 0)}
    rng = np.random.default_rng(seed)
    for person in people:
        folder = out / name / f"s{person}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(1, 11):
            photo = on_canvas(orl(person, index), rng)
            kind = "clean" if rng.random() < 0.5 else DEGRADATIONS[int(rng.integers(len(DEGRADATIONS)))]
            if kind != "clean":
                photo = degrade(photo, kind, rng)
            kinds[kind] += 1
            cv2.imwrite(str(folder / f"{index}-{kind}.png"), photo[..., ::-1])
    return kinds


def make_deepface(out: Path) -> int:
    source = SHARED / "data" / "deepface_testpairs"
    with open(source / "identity_groups.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        folder = out / "deepface" / f"group{int(row['group_id']):02d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row["image"], folder / row["image"])
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (its sub-folders are replaced)")
    args = parser.parse_args(argv)
    for name in ("aligned", "photos-tune", "photos-eval", "deepface"):
        shutil.rmtree(args.out / name, ignore_errors=True)
    written, missed = make_aligned(args.out)
    print(f"aligned: {written} crops of 40 people ({missed} photos without a detected face)")
    for name, people, seed in (("photos-tune", range(21, 31), 1), ("photos-eval", range(31, 41), 2)):
        print(f"{name}: {make_photos(args.out, name, people, seed)}")
    print(f"deepface: {make_deepface(args.out)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
