"""Labelled presentation-attack sets: what ``evaluate --pad`` and ``calibrate --liveness`` read, and their scoring.

Layouts (:func:`read_pad_set` tells them apart):

* a folder with ``live/`` (bona fide photos) and ``attack/<species>/`` (one sub-folder per attack species, e.g.
  ``print``, ``replay``, ``mask``; photos directly in ``attack/`` count as species ``attack``), searched
  recursively;
* a labels CSV with a header holding ``path`` and ``label`` (``live``, ``real``, ``bona fide``, ``genuine`` or ``1``
  for bona fide; anything else names the attack species, with ``attack``, ``spoof``, ``fake`` or ``0`` meaning an
  unnamed one) and, optionally, ``species``; paths relative to the CSV's folder;
* CelebA-Spoof (Zhang et al., ECCV 2020; for non-commercial research only, under the CelebA agreement): the root
  holding ``metas/intra_test/test_label.json`` (or ``train_label.json``), species from its spoof-type label;
* OULU-NPU (Boulkenafet et al., FG 2017; released under a licence agreement for research only): the root with
  ``Protocols/`` and ``Train_files``/``Dev_files``/``Test_files`` of ``.avi`` videos, read for one protocol and
  split (labels +1 real, -1 print, -2 replay); each video is scored as the mean over a few frames.

Neither public set can be downloaded by this package; users bring their own copy under its licence.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import load_image
from ..errors import GhostFaceNetsError
from .pad import PadScores

BONA_FIDE = "bona fide"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mov", ".mkv"})
_LIVE_LABELS = {"live", "real", "bona fide", "bona_fide", "bonafide", "genuine", "1", "+1"}
_UNNAMED_ATTACK = {"attack", "spoof", "fake", "0", "-1"}
# CelebA-Spoof's spoof-type label (index 40 of each label list; index 43 is 0 live / 1 spoof), from its README.
CELEBA_SPOOF_TYPES = {
    1: "photo",
    2: "poster",
    3: "a4",
    4: "face_mask",
    5: "upper_body_mask",
    6: "region_mask",
    7: "pc",
    8: "pad",
    9: "phone",
    10: "3d_mask",
}
OULU_SPECIES = {"+1": BONA_FIDE, "1": BONA_FIDE, "-1": "print", "-2": "replay"}
OULU_SPLITS = {"train": "Train", "dev": "Dev", "test": "Test"}


class PadSetError(GhostFaceNetsError):
    """A presentation-attack set that cannot be read."""


@dataclass(frozen=True)
class PadSample:
    """One presentation: an image or video file and its species (``bona fide`` for live ones)."""

    path: Path
    species: str

    @property
    def is_bona_fide(self) -> bool:
        return self.species == BONA_FIDE


@dataclass
class PadSet:
    """A labelled set: its name, layout and presentations."""

    name: str
    layout: str
    samples: list[PadSample]

    def __post_init__(self) -> None:
        if not any(s.is_bona_fide for s in self.samples):
            raise PadSetError(f"{self.name}: no bona fide (live) presentation")

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for sample in self.samples:
            found[sample.species] = found.get(sample.species, 0) + 1
        return found


def _media(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES and not p.name.startswith(".")
    )


def read_pad_folder(root: str | Path) -> PadSet:
    """``live/`` and ``attack/<species>/`` (see the module docstring)."""
    root = Path(root)
    live, attack = root / "live", root / "attack"
    if not live.is_dir():
        raise PadSetError(f"{root}: expected a live/ folder of bona fide photos (and attack/<species>/ folders)")
    samples = [PadSample(p, BONA_FIDE) for p in _media(live)]
    if attack.is_dir():
        for path in _media(attack):
            relative = path.relative_to(attack).parts
            samples.append(PadSample(path, relative[0] if len(relative) > 1 else "attack"))
    return PadSet(root.name, "folder", samples)


def _label_species(label: str, species: str | None) -> str:
    text = label.strip().lower()
    if text in _LIVE_LABELS:
        return BONA_FIDE
    if species and species.strip():
        return species.strip()
    return "attack" if text in _UNNAMED_ATTACK else label.strip()


def read_pad_csv(path: str | Path) -> PadSet:
    """A labels CSV (see the module docstring)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PadSetError(f"{path}: cannot read the labels ({exc})") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise PadSetError(f"{path}: expected a CSV header with the columns path and label (and optionally species)")
    samples = []
    for line, row in enumerate(rows, start=2):
        if not row.get("path") or row.get("label") is None:
            raise PadSetError(f"{path}: line {line}: a path and a label are needed")
        samples.append(PadSample(path.parent / row["path"], _label_species(row["label"], row.get("species"))))
    return PadSet(path.stem, "csv", samples)


def read_celeba_spoof(root: str | Path, split: str = "test") -> PadSet:
    """CelebA-Spoof's intra-test protocol: ``metas/intra_test/<split>_label.json`` (paths relative to the root)."""
    root = Path(root)
    labels = root / "metas" / "intra_test" / f"{split}_label.json"
    try:
        entries = json.loads(labels.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PadSetError(f"{labels}: cannot read CelebA-Spoof labels ({exc})") from None
    samples = []
    for relative, label in entries.items():
        if not isinstance(label, list) or len(label) < 44:
            raise PadSetError(f"{labels}: {relative}: expected CelebA-Spoof's 44 labels, got {label!r}")
        spoof_type = int(label[40])
        species = BONA_FIDE if int(label[43]) == 0 else CELEBA_SPOOF_TYPES.get(spoof_type, f"type_{spoof_type}")
        samples.append(PadSample(root / relative, species))
    return PadSet(f"CelebA-Spoof {split}", "celeba-spoof", samples)


def read_oulu_npu(root: str | Path, protocol: str = "1", split: str = "test") -> PadSet:
    """OULU-NPU: the videos of ``Protocols/Protocol_<protocol>/<Split>.txt`` (protocols 3 and 4 name a phone:
    ``protocol="3_1"`` reads ``Protocol_3/Test_1.txt``) in ``<Split>_files/``."""
    root = Path(root)
    if split not in OULU_SPLITS:
        raise PadSetError(f"OULU-NPU split must be one of {', '.join(OULU_SPLITS)}, got {split!r}")
    number, _, phone = protocol.partition("_")
    name = OULU_SPLITS[split] + (f"_{phone}" if phone else "")
    listing = root / "Protocols" / f"Protocol_{number}" / f"{name}.txt"
    try:
        lines = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise PadSetError(f"{listing}: cannot read the OULU-NPU protocol ({exc.strerror})") from None
    samples = []
    for line in lines:
        label, _, video = line.partition(",")
        if label.strip() not in OULU_SPECIES or not video.strip():
            raise PadSetError(f"{listing}: unexpected line {line!r} (expected '+1,1_1_01_1', '-1,...' or '-2,...')")
        samples.append(
            PadSample(root / f"{OULU_SPLITS[split]}_files" / f"{video.strip()}.avi", OULU_SPECIES[label.strip()])
        )
    return PadSet(f"OULU-NPU protocol {protocol} {split}", "oulu-npu", samples)


LAYOUTS = ("auto", "folder", "csv", "celeba-spoof", "oulu-npu")


def read_pad_set(source: str | Path, layout: str = "auto", protocol: str = "1", split: str = "test") -> PadSet:
    """The set at ``source`` in ``layout`` ("auto": a .csv file is a labels CSV, a folder with ``metas/`` is
    CelebA-Spoof, one with ``Protocols/`` is OULU-NPU, else ``live/`` + ``attack/``)."""
    path = Path(source)
    if layout not in LAYOUTS:
        raise PadSetError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not path.exists():
        raise PadSetError(f"{path}: no such file or folder")
    if layout == "auto":
        if path.is_file():
            layout = "csv"
        elif (path / "metas").is_dir():
            layout = "celeba-spoof"
        elif (path / "Protocols").is_dir():
            layout = "oulu-npu"
        else:
            layout = "folder"
    if layout == "csv":
        return read_pad_csv(path)
    if layout == "celeba-spoof":
        return read_celeba_spoof(path, split)
    if layout == "oulu-npu":
        return read_oulu_npu(path, protocol, split)
    return read_pad_folder(path)


# ------------------------------------------------------------------------------------------------ scoring
def video_frames(path: Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread over a video, uint8 RGB (OpenCV's FFmpeg)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise PadSetError(f"{path}: not a video OpenCV can read")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
        frames = []
        for index in np.linspace(0, max(total - 1, 0), count).round().astype(int):
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, frame = capture.read()
            if ok:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        return frames
    finally:
        capture.release()


@dataclass
class ScoredSet:
    """Liveness scores of a set: one per scored presentation, and the presentations without a score and why."""

    pad_set: PadSet
    scores: dict[Path, float] = field(default_factory=dict)
    unscored: dict[Path, str] = field(default_factory=dict)

    def pad_scores(self) -> PadScores:
        bona_fide: list[float] = []
        attacks: dict[str, list[float]] = {}
        missed_attacks: dict[str, int] = {}
        missed = 0
        for sample in self.pad_set.samples:
            score = self.scores.get(sample.path)
            if sample.is_bona_fide:
                if score is None:
                    missed += 1
                else:
                    bona_fide.append(score)
            elif score is None:
                missed_attacks[sample.species] = missed_attacks.get(sample.species, 0) + 1
            else:
                attacks.setdefault(sample.species, []).append(score)
        return PadScores(np.array(bona_fide), {k: np.array(v) for k, v in attacks.items()}, missed, missed_attacks)


def score_pad_set(
    pad_set: PadSet,
    detect: Callable[[np.ndarray], list[Any]],
    score: Callable[[np.ndarray, list[Any]], np.ndarray],
    frames: int = 5,
    progress: bool = False,
) -> ScoredSet:
    """The liveness score of the largest face of each presentation (``detect``: faces of a uint8 RGB image, largest
    first; ``score``: liveness scores of faces in an image); a video's is the mean over ``frames`` frames with a
    face. A presentation without a face (or unreadable) gets no score: a non-response."""
    from tqdm import tqdm

    scored = ScoredSet(pad_set)
    for sample in tqdm(pad_set.samples, desc="liveness", unit="sample", disable=not progress, leave=False):
        try:
            if sample.path.suffix.lower() in VIDEO_SUFFIXES:
                images = video_frames(sample.path, frames)
            else:
                images = [load_image(sample.path)]
        except GhostFaceNetsError as exc:
            scored.unscored[sample.path] = str(exc)
            continue
        values = []
        for image in images:
            faces = detect(image)
            if faces:
                values.append(float(score(image, faces[:1])[0]))
        if values:
            scored.scores[sample.path] = float(np.mean(values))
        else:
            scored.unscored[sample.path] = f"{sample.path}: no face found"
    return scored
