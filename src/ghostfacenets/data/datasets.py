"""Training data: identity folders, insightface RecordIO and synthetic images; augmentation; a resumable sampler.

Every sample a training run draws is named by (epoch, position in the epoch, dataset index), and its augmentation
is drawn from a random generator seeded with (seed, epoch, position): batches are the same whatever the number of
loader workers or processes, and a resumed run draws exactly what an uninterrupted run would have drawn.
A damaged image (unreadable file, corrupt record) is replaced by the next readable one and reported, never fatal.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import GhostFaceNetsError
from ..files import written_by
from .folders import scan_identity_folder
from .images import ImageError, ResizeMode, decode_image, fit_image
from .recordio import InsightFaceRecords, RecordError, write_insightface_records

MAX_REPLACEMENT_TRIES = 64
MAX_PENDING = 10_000  # decoding tasks queued at once by inspection and build-rec
_SYNTHETIC = re.compile(r"synthetic(?::([0-9]+)(?::([0-9]+))?)?")


class ImageSource(Protocol):
    """Indexed labelled images: ``load(i)`` -> (uint8 RGB (H, W, 3), label); ``name(i)`` says where it is."""

    @property
    def num_classes(self) -> int | None: ...

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[np.ndarray, int]: ...

    def name(self, index: int) -> str: ...


def select_identities(names: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    """Names matching any of the shell patterns (``s1``, ``s[1-3]*``); all names when ``patterns`` is None."""
    if patterns is None:
        return list(names)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    missing = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if missing:
        raise GhostFaceNetsError(f"no identity folder matches {missing}")
    return chosen


class FolderSource:
    """``root/<identity>/<image>``; ``identities`` (shell patterns) keeps only some sub-folders, relabelled 0..K-1."""

    def __init__(
        self,
        root: str | Path,
        identities: Sequence[str] | None = None,
        image_size: int | None = 112,
        resize: ResizeMode = "pad",
    ) -> None:
        folder = scan_identity_folder(root)
        keep = set(select_identities(folder.names, identities))
        relabel = {old: new for new, old in enumerate(i for i, n in enumerate(folder.names) if n in keep)}
        pairs = [(p, relabel[label]) for p, label in zip(folder.paths, folder.labels) if label in relabel]
        self.root = folder.root
        self.paths = [p for p, _ in pairs]
        self.labels = [label for _, label in pairs]
        self.names = [n for n in folder.names if n in keep]
        self.num_classes = len(self.names)
        self.image_size, self.resize = image_size, resize

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        path = self.paths[index]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
        return fit_image(decode_image(data, str(path)), self.image_size, self.resize), self.labels[index]

    def name(self, index: int) -> str:
        return str(self.paths[index])


class RecordSource:
    """insightface ``train.rec`` / ``train.idx`` (a folder or the ``.rec`` path).

    ``num_classes``: the identity count when neither ``property`` nor the header record gives it (a different
    count than theirs is an error); labels at or above the count make a record damaged. None with no count
    anywhere: labels are not checked.
    """

    def __init__(
        self, path: str | Path, image_size: int | None = 112, resize: ResizeMode = "pad", num_classes: int | None = None
    ) -> None:
        self.records = InsightFaceRecords(path)
        declared = self.records.num_classes
        if declared is not None and num_classes is not None and num_classes != declared:
            raise GhostFaceNetsError(
                f"{path}: the set declares {declared} identities (property file or header "
                f"record), data.num_classes says {num_classes}; leave data.num_classes unset"
            )
        self.num_classes = declared if declared is not None else num_classes
        self.image_size, self.resize = image_size, resize

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        key = self.records.image_keys[index]
        payload, label = self.records.read(key)
        if self.num_classes is not None and label >= self.num_classes:
            raise RecordError(f"{self.name(index)}: label {label} but the set has {self.num_classes} identities")
        return fit_image(decode_image(payload, self.name(index)), self.image_size, self.resize), label

    def name(self, index: int) -> str:
        return f"{self.records.file.rec_path} record {self.records.image_keys[index]}"


class SyntheticSource:
    """Random images (the same for the same index) with labels ``index % num_classes``, for throughput tests."""

    def __init__(
        self, num_images: int = 100_000, num_classes: int = 1000, image_size: int = 112, seed: int = 0
    ) -> None:
        self.num_images, self.num_classes, self.image_size, self.seed = num_images, num_classes, image_size, seed

    def __len__(self) -> int:
        return self.num_images

    def load(self, index: int) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng([self.seed, index])
        return rng.integers(0, 256, (self.image_size, self.image_size, 3), dtype=np.uint8), index % self.num_classes

    def name(self, index: int) -> str:
        return f"synthetic image {index}"


def is_record_set(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_dir() and (path / "train.rec").is_file()) or (path.is_file() and path.suffix == ".rec")


def parse_synthetic(text: str) -> tuple[int, int] | None:
    """(images, classes) of ``synthetic``, ``synthetic:IMAGES`` or ``synthetic:IMAGES:CLASSES`` (defaults 100000
    and 1000); None for text that is a path (anything not starting with ``synthetic:`` and not ``synthetic``)."""
    if text != "synthetic" and not text.startswith("synthetic:"):
        return None
    match = _SYNTHETIC.fullmatch(text)
    if match is None or any(int(v) < 1 for v in match.groups() if v is not None):
        raise GhostFaceNetsError(
            f"{text!r}: expected synthetic[:IMAGES[:CLASSES]] with positive whole numbers, e.g. synthetic:10000:100"
        )
    images, classes = match.groups()
    return int(images or 100_000), int(classes or 1000)


def open_source(
    path: str | Path,
    identities: Sequence[str] | None = None,
    image_size: int = 112,
    resize: ResizeMode = "pad",
    num_classes: int | None = None,
) -> ImageSource:
    """A RecordIO set (folder with ``train.rec`` or a ``.rec`` file), ``synthetic[:IMAGES[:CLASSES]]``, or an
    identity folder (any other path)."""
    synthetic = parse_synthetic(str(path))
    if synthetic is not None:
        return SyntheticSource(*synthetic, image_size=image_size)
    if is_record_set(path):
        if identities is not None:
            raise GhostFaceNetsError("data.train_identities selects sub-folders and needs an identity folder")
        source = RecordSource(path, image_size, resize, num_classes)
        if source.num_classes is None:
            raise GhostFaceNetsError(
                f"{path}: neither a 'property' file nor an insightface header record says how many identities "
                "there are; run 'ghostfacenets dataset inspect' and set data.num_classes"
            )
        return source
    return FolderSource(path, identities, image_size, resize)


@dataclass(frozen=True)
class Augmentation:
    """Random horizontal flip (the paper's only augmentation) and optional geometric and photometric jitter.

    ``rotation`` degrees (uniform +-), ``scale`` (min, max) zoom, ``shift`` fraction of the size (uniform +-, per
    axis), ``brightness`` and ``contrast`` relative jitter (uniform +-), ``grayscale`` probability, ``erase``
    probability of random erasing (Zhong et al. 2017: one rectangle of 2-25 % of the image, aspect 0.3-3.3, filled
    with a random grey level), which teaches robustness to occlusions such as glasses.
    """

    flip: bool = True
    rotation: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    grayscale: float = 0.0
    erase: float = 0.0

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Draw every random number in a fixed order whatever is enabled, so enabling one option leaves the others'
        # draws unchanged.
        flip, angle, zoom, dx, dy, bright, contrast, grey, erase, area, aspect, ex, ey, fill = rng.random(14)
        if self.rotation or self.scale != (1.0, 1.0) or self.shift:
            height, width = image.shape[:2]
            matrix = cv2.getRotationMatrix2D(
                (width / 2 - 0.5, height / 2 - 0.5),
                self.rotation * (2 * angle - 1),
                self.scale[0] + (self.scale[1] - self.scale[0]) * zoom,
            )
            matrix[:, 2] += (self.shift * width * (2 * dx - 1), self.shift * height * (2 * dy - 1))
            image = cv2.warpAffine(
                image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
        if self.brightness or self.contrast:
            pixels = image.astype(np.float32)
            mean = pixels.mean()
            pixels = (pixels - mean) * (1 + self.contrast * (2 * contrast - 1)) + mean
            pixels *= 1 + self.brightness * (2 * bright - 1)
            image = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
        if erase < self.erase:
            height, width = image.shape[:2]
            size = (0.02 + 0.23 * area) * height * width
            ratio = math.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * aspect)
            h = min(height, max(1, round(math.sqrt(size * ratio))))
            w = min(width, max(1, round(math.sqrt(size / ratio))))
            top, left = int(ey * (height - h + 1)), int(ex * (width - w + 1))
            image = image.copy()
            image[top : top + h, left : left + w] = int(fill * 255)
        if grey < self.grayscale:
            image = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        if self.flip and flip < 0.5:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)


def _report(name: str, exc: Exception) -> str:
    """``name: reason`` for a damaged image (the reason often starts with the name already)."""
    text = str(exc)
    return text if text.startswith(name) else f"{name}: {text}"


def _reason(name: str, exc: Exception) -> str:
    """Why an image is damaged, without its name."""
    return _report(name, exc).removeprefix(f"{name}: ")


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    """Optimiser steps of one epoch (the remaining images are dropped); an error when there is not one batch."""
    if num_samples < global_batch:
        raise GhostFaceNetsError(
            f"{num_samples} training images are fewer than one batch of {global_batch}; lower train.batch_size"
        )
    return num_samples // global_batch


SampleKey = tuple[int, int, int]  # (epoch, position in the epoch, dataset index)


class TrainDataset(Dataset):
    """Samples keyed by (epoch, position, index) -> (uint8 HWC tensor, label, names of damaged images replaced)."""

    def __init__(self, source: ImageSource, augmentation: Augmentation | None = None, seed: int = 0) -> None:
        self.source, self.augmentation, self.seed = source, augmentation, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, int, list[str]]:
        epoch, position, index = key
        damaged: list[str] = []
        for attempt in range(MAX_REPLACEMENT_TRIES):
            candidate = (index + attempt) % len(self.source)
            try:
                image, label = self.source.load(candidate)
                break
            except (ImageError, RecordError, OSError) as exc:
                damaged.append(_report(self.source.name(candidate), exc))
        else:
            raise GhostFaceNetsError(
                f"{MAX_REPLACEMENT_TRIES} damaged images in a row from {self.source.name(index)}: "
                f"check the data with 'ghostfacenets dataset inspect'; last: {damaged[-1]}"
            )
        if self.augmentation is not None:
            image = self.augmentation(image, np.random.default_rng([self.seed, epoch, position]))
        return torch.from_numpy(image), label, damaged


def collate(batch: list[tuple[torch.Tensor, int, list[str]]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack images (N, H, W, 3) uint8 and labels; concatenate the damaged-image reports."""
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    return images, labels, [d for b in batch for d in b[2]]


class TrainSampler(Sampler[SampleKey]):
    """Keys of the micro-batches one rank loads, from optimiser step ``start_step`` to ``total_steps``.

    Each epoch is a permutation of the dataset seeded with (seed, epoch); optimiser step s of the epoch uses positions
    ``[s * G, (s + 1) * G)`` (G = global batch; the remainder is dropped). That global batch is cut into
    ``accumulation * world_size`` micro-batches; micro-batch ``a`` of rank ``r`` is chunk ``a * world_size + r``.
    So two ranks see exactly what one rank with two accumulation steps sees, and a run resumed at any step, with any
    number of ranks, continues the same sequence.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        accumulation: int = 1,
        seed: int = 0,
        start_step: int = 0,
        total_steps: int | None = None,
    ) -> None:
        chunks = world_size * accumulation
        if global_batch % chunks:
            raise GhostFaceNetsError(
                f"train.batch_size {global_batch} must be divisible by processes x accumulation = {chunks}"
            )
        self.num_samples, self.global_batch, self.rank, self.world_size = num_samples, global_batch, rank, world_size
        self.accumulation, self.seed, self.start_step = accumulation, seed, start_step
        self.micro_batch = global_batch // chunks
        self.steps_per_epoch = steps_per_epoch(num_samples, global_batch)
        self.total_steps = total_steps if total_steps is not None else self.steps_per_epoch

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.accumulation * self.micro_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, perm = -1, torch.empty(0, dtype=torch.int64)
        for step in range(self.start_step, self.total_steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                perm = self.permutation(epoch)
            base = (step % self.steps_per_epoch) * self.global_batch
            for micro in range(self.accumulation):
                start = base + (micro * self.world_size + self.rank) * self.micro_batch
                for position in range(start, start + self.micro_batch):
                    yield epoch, position, int(perm[position])


def bounded_map(pool: ThreadPoolExecutor, function: Callable[[int], Any], count: int) -> Iterator[Any]:
    """``function(i)`` for i in ``range(count)``, in order, run by ``pool`` with at most ``MAX_PENDING`` tasks
    queued at a time (``pool.map`` would queue all of them at once: millions of futures for MS1M)."""
    pending: deque[Future] = deque()
    for index in range(count):
        pending.append(pool.submit(function, index))
        if len(pending) >= MAX_PENDING:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def inspect_source(source: ImageSource, workers: int = 4, progress: bool = True) -> dict[str, Any]:
    """Read and decode every image: counts of images and identities, and ``damaged``: (index, reason) pairs."""
    from tqdm import tqdm

    def check(index: int) -> tuple[int | None, str | None]:
        try:
            return source.load(index)[1], None
        except (ImageError, RecordError, OSError) as exc:
            return None, _reason(source.name(index), exc)

    labels: set[int] = set()
    damaged: list[tuple[int, str]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = bounded_map(pool, check, len(source))
        for index, (label, problem) in enumerate(
            tqdm(results, total=len(source), disable=not progress, desc="inspect", unit="img", leave=False)
        ):
            if problem is not None:
                damaged.append((index, problem))
            else:
                labels.add(label)
    return {
        "images": len(source),
        "readable": len(source) - len(damaged),
        "identities": len(labels),
        "damaged": damaged,
    }


def inspect_dataset(path: str | Path, workers: int = 4, progress: bool = True) -> dict[str, Any]:
    """Check an identity folder or an insightface RecordIO set by decoding every image: ``images``,
    ``identities``, ``corrupt`` (file paths of a folder's images; record keys of a RecordIO set, and the ``.idx``
    path for index lines that cannot be read) and ``corrupt_reasons`` ({str(entry): reason}); for RecordIO also
    the identity count that ``property`` or the header record declares; ``ghostfacenets_version``."""
    problems: list[tuple[int | str, str]] = []
    if is_record_set(path):
        record_source = RecordSource(path, image_size=None)
        records = record_source.records
        lines = [f"line {n}: cannot parse {text!r}" for n, text in records.file.bad_index_lines]
        if lines:
            problems.append((str(records.file.idx_path), "; ".join(lines)))
        if records.header_problem is not None:
            problems.append((0, records.header_problem))
        report = {"path": str(path), "format": "recordio", **inspect_source(record_source, workers, progress)}
        problems += [(records.image_keys[i], reason) for i, reason in report.pop("damaged")]
        report["declared_identities"] = record_source.num_classes
    else:
        folder_source = FolderSource(path, image_size=None)
        report = {"path": str(path), "format": "folder", **inspect_source(folder_source, workers, progress)}
        problems += [(str(folder_source.paths[i]), reason) for i, reason in report.pop("damaged")]
    report["corrupt"] = [where for where, _ in problems]
    report["corrupt_reasons"] = {str(where): reason for where, reason in problems}
    return {**report, **written_by()}


def _encoded_image(source: FolderSource, index: int, quality: int) -> bytes:
    """The image as JPEG at the source's size: the file's own bytes when it already is such a JPEG."""
    path = source.paths[index]
    data = path.read_bytes()
    image = decode_image(data, str(path))
    if data[:2] == b"\xff\xd8" and image.shape[:2] == (source.image_size, source.image_size):
        return data
    fitted = fit_image(image, source.image_size, source.resize)
    ok, encoded = cv2.imencode(".jpg", fitted[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
        raise ImageError(f"{path}: JPEG encoding failed")
    return encoded.tobytes()


def build_records(
    folder: str | Path,
    output: str | Path,
    identities: Sequence[str] | None = None,
    image_size: int = 112,
    resize: ResizeMode = "pad",
    quality: int = 95,
    workers: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Write an identity folder as insightface ``train.rec`` / ``train.idx`` / ``property`` in ``output``.

    JPEG files already at ``image_size`` are stored byte for byte; other images are fitted (``resize``) and encoded
    as JPEG (``quality``). Damaged images are skipped and listed; identities left without images are dropped.
    """
    from tqdm import tqdm

    source = FolderSource(folder, identities, image_size, resize)
    skipped: list[str] = []
    relabel: dict[int, int] = {}

    def encode(index: int) -> tuple[int, bytes | None, str | None]:
        try:
            return index, _encoded_image(source, index, quality), None
        except (ImageError, OSError) as exc:
            return index, None, _report(source.name(index), exc)

    def records() -> Iterator[tuple[bytes, int]]:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = bounded_map(pool, encode, len(source))
            for index, payload, problem in tqdm(
                results, total=len(source), disable=not progress, desc="build-rec", unit="img", leave=False
            ):
                if problem is not None:
                    skipped.append(problem)
                else:
                    label = relabel.setdefault(source.labels[index], len(relabel))
                    yield payload, label

    images, classes = write_insightface_records(output, records(), (image_size, image_size))
    return {"output": str(output), "images": images, "identities": classes, "skipped": skipped, **written_by()}
