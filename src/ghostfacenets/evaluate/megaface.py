"""MegaFace Challenge 1 (FaceScrub probes, up to a million MegaFace distractors) in insightface's refined protocol.

Layout (insightface's MegaFace test pack; the files may also sit in a ``data/`` sub-folder)::

    facescrub_images/<identity>/<file>     aligned 112x112 FaceScrub crops
    megaface_images/<a>/<b>/<file>         aligned 112x112 MegaFace distractor crops
    facescrub_lst                          one "<identity>/<file>" per line (the probe set)
    megaface_lst                           one "<a>/<b>/<file>" per line (the distractor set)
    facescrub_noises.txt                   mislabelled FaceScrub images: one file name per line, "#" comments
    megaface_noises.txt                    distractors showing a FaceScrub identity: one "<a>/<b>/<file>" per
                                           line ("#" comments; a line with tabs names the path in its 2nd field)

Features as insightface's ``gen_megaface.py``: emb(x) + emb(flip x), L2-normalised. Noise handling as its
``remove_noises.py``: a noisy FaceScrub image takes its identity's centre (the sum of the identity's clean features
plus uniform noise in [-0.001, 0.001] per dimension, L2-normalised; the noise is drawn from
``numpy.random.default_rng(seed)`` in list order, where insightface leaves it unseeded); a noisy distractor gets an
extra feature dimension of 100, which the devkit's distance scoring never lets match: here its scores are -inf,
and it still counts as a distractor and in the impostor pairs.

Metrics as the MegaFace devkit (``run_experiment.py``) defines them, for a gallery of N distractors:

* identification: for each FaceScrub identity, each image g of it is placed in the gallery with the distractors
  and each other image p of it is the probe; the rank of (p, g) is 1 + the number of distractors scoring strictly
  higher against p than g does (ties favour the mate). CMC(k) = the share of all such (p, g) with rank <= k;
  rank-1 = CMC(1).
* verification: genuine pairs = every pair of FaceScrub images of one identity, impostor pairs = every FaceScrub
  image with every distractor; TAR at the lowest threshold whose FAR is at most 1e-6, 1e-5, 1e-4
  (``evaluate.metrics``: accept when the cosine is greater than the threshold).

Sizes: 10, 100, ..., 1,000,000 below the list's length, then the whole list (the devkit's 1M set, the only size
insightface reports). A smaller set is the first N distractors of one seeded permutation of the list, so the sets are
nested and one pass over the distractors scores every size. Scoring holds one block of probes x distractors scores
of at most ``SCORE_CHUNK_ELEMENTS`` float32 at a time, the top ``max_rank`` distractor scores per probe, the highest
floor(1e-4 x impostors) + 1 impostor scores and a histogram of all impostor scores (for the ROC figure).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ..data.images import ImageError
from ..errors import GhostFaceNetsError
from ..inference import Embedder, load_embedder, resolve_device
from .distributed import ImageJob, embed_job, file_job
from .metrics import allowed_false_accepts, far_threshold, l2_normalize, tar_at_far_of_top

DISTRACTOR_SIZES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
VERIFICATION_FARS = {"1e-6": 1e-6, "1e-5": 1e-5, "1e-4": 1e-4}
MAX_RANK = 100
SCORE_CHUNK_ELEMENTS = 1 << 24  # probe x distractor scores per block: 64 MiB of float32
HISTOGRAM_BINS = 30_000  # impostor score histogram over [-1.5, 1.5]: bins 1e-4 wide
HISTOGRAM_RANGE = (-1.5, 1.5)
NOISE_AMPLITUDE = 0.001


class MegaFaceError(GhostFaceNetsError):
    """A MegaFace folder that does not have the test pack's layout."""


@dataclass(frozen=True)
class MegaFaceLayout:
    """Where the files of a MegaFace test pack are (noise lists None when not used)."""

    root: Path
    facescrub_images: Path
    megaface_images: Path
    facescrub_list: Path
    megaface_list: Path
    facescrub_noises: Path | None
    megaface_noises: Path | None


def find_layout(root: str | Path, refined: bool = True) -> MegaFaceLayout:
    """The test pack's files in ``root`` or ``root/data``; the noise lists are required when ``refined``."""
    root = Path(root)
    base = root / "data" if not (root / "facescrub_lst").exists() and (root / "data").is_dir() else root
    paths = {name: base / name for name in ("facescrub_images", "megaface_images", "facescrub_lst", "megaface_lst")}
    if refined:
        paths |= {name: base / name for name in ("facescrub_noises.txt", "megaface_noises.txt")}
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        raise MegaFaceError(
            f"{root}: missing {', '.join(missing)} (insightface's MegaFace test pack layout, see docs/evaluation.md"
            + ("; --no-megaface-refined runs without the noise lists)" if refined else ")")
        )
    for name in ("facescrub_images", "megaface_images"):
        if not paths[name].is_dir():
            raise MegaFaceError(f"{paths[name]}: not a folder")
    return MegaFaceLayout(
        root,
        paths["facescrub_images"],
        paths["megaface_images"],
        paths["facescrub_lst"],
        paths["megaface_lst"],
        paths.get("facescrub_noises.txt"),
        paths.get("megaface_noises.txt"),
    )


def _lines(path: Path, comments: bool = False) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines (and, with ``comments``, not starting with "#")."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MegaFaceError(f"{path}: cannot read ({exc})") from None
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not (comments and line.startswith("#"))
    ]


def read_image_list(path: Path, depth: int) -> list[PurePosixPath]:
    """The relative image paths of a list file, each of at least ``depth`` parts and inside its folder."""
    entries = []
    for number, text in _lines(path):
        entry = PurePosixPath(text)
        if entry.is_absolute() or ".." in entry.parts or len(entry.parts) < depth:
            raise MegaFaceError(
                f"{path}:{number}: expected a relative path of at least {depth} parts such as "
                f"{'/'.join(['a', 'b', 'c.jpg'][-depth:])}, got {text!r}"
            )
        entries.append(entry)
    if not entries:
        raise MegaFaceError(f"{path}: no images listed")
    return entries


def read_noise_list(path: Path, megaface: bool) -> set[str]:
    """The names of a noise list as ``remove_noises.py`` reads them: FaceScrub file names, or MegaFace
    "<a>/<b>/<file>" paths (from the second field of a line with tabs)."""
    names = set()
    for _, text in _lines(path, comments=True):
        fields = text.split("\t")
        names.add(fields[1].strip() if megaface and len(fields) > 1 else text)
    return names


@dataclass(frozen=True)
class MegaFaceEvaluation:
    """The JSON-ready metrics and, per distractor count, the ROC curve (FAR, TAR) for figures."""

    metrics: dict[str, Any]
    roc: dict[int, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class MegaFaceSet:
    """The probes (FaceScrub) and distractors (MegaFace) of a test pack, with their noise flags."""

    layout: MegaFaceLayout
    probe_paths: list[Path]
    probe_labels: np.ndarray  # identity index per probe
    identities: list[str]
    probe_noisy: np.ndarray
    distractor_paths: list[Path]
    distractor_noisy: np.ndarray

    @property
    def job(self) -> ImageJob:
        """Every probe, then every distractor."""
        return file_job("MegaFace", [*self.probe_paths, *self.distractor_paths])

    def evaluate(
        self,
        features: np.ndarray,
        flip: bool = True,
        seed: int = 0,
        max_rank: int = MAX_RANK,
        device: str | torch.device = "cpu",
        chunk_elements: int = SCORE_CHUNK_ELEMENTS,
    ) -> MegaFaceEvaluation:
        """The metrics from the raw embeddings of :attr:`job` (probes first), as the module docstring defines."""
        n_probes = len(self.probe_paths)
        if features.shape[0] != n_probes + len(self.distractor_paths):
            raise MegaFaceError(f"{features.shape[0]} features for {n_probes + len(self.distractor_paths)} images")
        probes = refined_probes(normalize_rows(features[:n_probes]), self.probe_labels, self.probe_noisy, seed)
        distractors = normalize_rows(features[n_probes:])
        sizes = distractor_sizes(len(distractors))
        order = np.random.default_rng(seed).permutation(len(distractors))
        scored = score_distractors(
            probes, distractors, self.distractor_noisy, sizes, order, max_rank, device, chunk_elements
        )
        probe_scores = probe_similarities(probes, device)
        mates_p, mates_g = ordered_mates(self.probe_labels)
        upper = mates_p < mates_g
        genuine = probe_scores[mates_p[upper], mates_g[upper]]
        results, curves = {}, {}
        for result in scored:
            counts = rank_counts(result.top_distractor_scores, mates_p, mates_g, probe_scores)
            results[str(result.distractors)] = {
                "distractors": result.distractors,
                "impostor_pairs": result.impostors,
                "rank1": float(np.mean(counts < 1)) if counts.size else None,
                "cmc": [float(np.mean(counts < k)) for k in range(1, max_rank + 1)] if counts.size else [],
                "tar_at_far": tar_at_far_of_top(
                    genuine, result.top_impostor_scores, result.impostors, VERIFICATION_FARS
                ),
            }
            curves[result.distractors] = roc_points(result, genuine)
        largest = results[str(sizes[-1])]
        metrics = {
            "probes": n_probes,
            "probe_identities": len(self.identities),
            "probe_gallery_pairs": len(mates_p),
            "genuine_pairs": len(genuine),
            "distractors": len(distractors),
            "noisy_probes": int(self.probe_noisy.sum()),
            "noisy_distractors": int(self.distractor_noisy.sum()),
            "refined": self.layout.facescrub_noises is not None,
            "flip": flip,
            "seed": seed,
            "rank1": largest["rank1"],
            "tar_at_far": largest["tar_at_far"],
            "sizes": results,
        }
        return MegaFaceEvaluation(metrics, curves)


def _check_files(root: Path, entries: list[PurePosixPath], what: str) -> list[Path]:
    paths = [root.joinpath(*entry.parts) for entry in entries]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ImageError(f"{len(missing)} {what} image(s) listed but absent, e.g. {missing[0]}")
    return paths


def read_megaface(root: str | Path, refined: bool = True) -> MegaFaceSet:
    """Read and check a test pack (every listed image must exist: a missing one fails before any embedding)."""
    layout = find_layout(root, refined)
    probes = read_image_list(layout.facescrub_list, 2)
    distractors = read_image_list(layout.megaface_list, 3)
    probe_noise = read_noise_list(layout.facescrub_noises, False) if layout.facescrub_noises else set()
    distractor_noise = read_noise_list(layout.megaface_noises, True) if layout.megaface_noises else set()
    identities = sorted({entry.parts[-2] for entry in probes})
    index = {name: i for i, name in enumerate(identities)}
    labels = np.array([index[entry.parts[-2]] for entry in probes], dtype=np.int64)
    probe_noisy = np.array([entry.name in probe_noise for entry in probes])
    clean = np.bincount(labels[~probe_noisy], minlength=len(identities))
    if refined and (clean == 0).any():
        name = identities[int(np.flatnonzero(clean == 0)[0])]
        raise MegaFaceError(f"{layout.facescrub_noises}: every image of {name} is listed as noise; no centre to use")
    return MegaFaceSet(
        layout,
        _check_files(layout.facescrub_images, probes, "FaceScrub"),
        labels,
        identities,
        probe_noisy,
        _check_files(layout.megaface_images, distractors, "MegaFace"),
        np.array(["/".join(entry.parts[-3:]) in distractor_noise for entry in distractors]),
    )


def normalize_rows(features: np.ndarray, rows: int = 1 << 16) -> np.ndarray:
    """L2-normalised float32 copy of ``features``, ``rows`` rows at a time (no float64 copy of a million rows)."""
    out = np.empty(features.shape, np.float32)
    for start in range(0, len(features), rows):
        out[start : start + rows] = l2_normalize(features[start : start + rows])
    return out


def refined_probes(probes: np.ndarray, labels: np.ndarray, noisy: np.ndarray, seed: int = 0) -> np.ndarray:
    """``probes`` (normalised) with each noisy row replaced as ``remove_noises.py`` does: its identity's centre (sum
    of the clean rows) plus U(-0.001, 0.001) noise per dimension (``default_rng(seed)``, rows in order),
    L2-normalised."""
    out = probes.astype(np.float32, copy=True)
    rows = np.flatnonzero(noisy)
    if rows.size == 0:
        return out
    clean = ~noisy
    centres = np.zeros((int(labels.max()) + 1, probes.shape[1]), np.float64)
    np.add.at(centres, labels[clean], probes[clean].astype(np.float64))
    jitter = np.random.default_rng(seed).uniform(-NOISE_AMPLITUDE, NOISE_AMPLITUDE, (rows.size, probes.shape[1]))
    out[rows] = l2_normalize(centres[labels[rows]] + jitter)
    return out


def distractor_sizes(count: int) -> list[int]:
    """The standard sizes below ``count``, then ``count`` itself."""
    if count < 1:
        raise MegaFaceError("no distractors to evaluate")
    return [size for size in DISTRACTOR_SIZES if size < count] + [count]


@dataclass(frozen=True)
class DistractorScores:
    """What scoring keeps for one distractor count: per probe its ``max_rank`` highest distractor scores
    (descending), the highest impostor scores (descending) and a histogram of every finite impostor score."""

    distractors: int
    impostors: int
    top_distractor_scores: np.ndarray
    top_impostor_scores: np.ndarray
    histogram: np.ndarray


def score_distractors(
    probes: np.ndarray,
    distractors: np.ndarray,
    noisy: np.ndarray,
    sizes: list[int],
    order: np.ndarray | None = None,
    max_rank: int = MAX_RANK,
    device: str | torch.device = "cpu",
    chunk_elements: int = SCORE_CHUNK_ELEMENTS,
    largest_far: float = max(VERIFICATION_FARS.values()),
) -> list[DistractorScores]:
    """Score every probe (P, D) against the distractors (N, D) (both normalised) in blocks of at most
    ``chunk_elements`` scores; one :class:`DistractorScores` per size, the first ``size`` distractors of ``order``
    (nested sets). Noisy distractors score -inf. Memory beyond the inputs: one block, its bool mask, P x max_rank,
    the kept impostor scores (about floor(``largest_far`` x P x N) + 1) and the histogram."""
    device = torch.device(device)
    order = np.arange(len(distractors)) if order is None else np.asarray(order)
    if not sizes or sizes != sorted(sizes) or sizes[-1] > len(order):
        raise MegaFaceError(f"distractor sizes must rise up to {len(order)}, got {sizes}")
    probe = torch.from_numpy(np.ascontiguousarray(probes, dtype=np.float32)).to(device)
    n_probes = probe.shape[0]
    keep = allowed_false_accepts(n_probes * sizes[-1], largest_far) + 1  # impostor scores the last size needs
    low, high = HISTOGRAM_RANGE
    width = (high - low) / HISTOGRAM_BINS
    step = max(1, min(chunk_elements, 1 << 24) // max(n_probes, 1))  # histc counts in float32: exact to 2**24
    top = torch.full((n_probes, max_rank), -math.inf, device=device)
    kept = torch.empty(0, device=device)
    histogram = torch.zeros(HISTOGRAM_BINS, dtype=torch.float64, device=device)
    floor = -math.inf  # every impostor score the last size needs is >= floor
    results, done = [], 0
    for size in sizes:
        for start in range(done, size, step):
            rows = order[start : min(start + step, size)]
            block = probe @ torch.from_numpy(np.ascontiguousarray(distractors[rows])).to(device).T
            bad = noisy[rows]
            if bad.any():
                block[:, torch.from_numpy(np.flatnonzero(bad)).to(device)] = -math.inf
            top = merge_best_scores(top, block)
            histogram += torch.histc(block, HISTOGRAM_BINS, low, high).double()  # -inf falls outside: not counted
            floor = _tail_floor(histogram, keep, low, width)
            kept = torch.cat([kept[kept >= floor], block[block >= floor]])
        done = size
        impostors = n_probes * size
        need = min(allowed_false_accepts(impostors, largest_far) + 1, impostors)
        highest = torch.topk(kept, need).values  # kept holds every score >= floor: at least ``keep`` >= need
        results.append(
            DistractorScores(
                size,
                impostors,
                top.cpu().numpy(),
                highest.cpu().numpy(),
                histogram.cpu().numpy().round().astype(np.int64),
            )
        )
    return results


def merge_best_scores(top: torch.Tensor, block: torch.Tensor, first: int = 16) -> torch.Tensor:
    """Each row's highest ``top.shape[1]`` values among ``top`` (descending) and ``block``. Only the ``first`` best
    of a block row are taken, unless the last of them still beats the row's current lowest kept value (then more may
    enter: that row takes its full count); after the first blocks few rows need more, and a small top-k is several
    times cheaper than a large one."""
    rank = top.shape[1]
    full = min(rank, block.shape[1])
    best = torch.topk(block, min(first, full), dim=1).values
    more = best[:, -1] > top[:, -1]
    if best.shape[1] == full or not bool(more.any()):
        return torch.topk(torch.cat([top, best], dim=1), rank, dim=1).values
    if bool(more.all()):
        return torch.topk(torch.cat([top, torch.topk(block, full, dim=1).values], dim=1), rank, dim=1).values
    merged = torch.topk(torch.cat([top, best], dim=1), rank, dim=1).values
    rows = torch.nonzero(more).reshape(-1)
    fuller = torch.topk(block[rows], full, dim=1).values
    merged[rows] = torch.topk(torch.cat([top[rows], fuller], dim=1), rank, dim=1).values
    return merged


def _tail_floor(histogram: torch.Tensor, keep: int, low: float, width: float) -> float:
    """A score under which no impostor score among the ``keep`` highest can lie: the lower edge of the bin where
    the count from the top reaches ``keep``, less one bin (histc's float32 binning may round across an edge)."""
    above = torch.flip(torch.cumsum(torch.flip(histogram, [0]), 0), [0])
    full = torch.nonzero(above >= keep)
    if full.numel() == 0:
        return -math.inf
    return low + (int(full[-1, 0]) - 1) * width


def probe_similarities(probes: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Cosine similarities (P, P) of the probes, computed as the distractor scores are (float32 on ``device``)."""
    probe = torch.from_numpy(np.ascontiguousarray(probes, dtype=np.float32)).to(torch.device(device))
    return (probe @ probe.T).cpu().numpy()


def ordered_mates(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probe, gallery image) index pairs: every ordered pair of two different images of one identity."""
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    probe, gallery = np.nonzero(same)
    return probe, gallery


def rank_counts(
    top: np.ndarray, probes: np.ndarray, galleries: np.ndarray, probe_scores: np.ndarray, pairs: int = 1 << 16
) -> np.ndarray:
    """For each (probe, gallery image) pair: how many distractors score strictly higher against the probe than the
    gallery image does, counted among the probe's ``top`` distractor scores (so saturating at their number)."""
    counts = np.empty(len(probes), np.int64)
    for start in range(0, len(probes), pairs):
        p, g = probes[start : start + pairs], galleries[start : start + pairs]
        counts[start : start + pairs] = np.sum(top[p] > probe_scores[p, g][:, None], axis=1)
    return counts


def roc_points(scores: DistractorScores, genuine: np.ndarray, points: int = 121) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) at FAR targets spaced evenly on a log axis from 1/impostors to 1: exact thresholds where the kept
    impostor scores reach, otherwise the edge of the histogram bin (1e-4 wide) where the count crosses the target."""
    low, high = HISTOGRAM_RANGE
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    above = np.cumsum(scores.histogram[::-1])[::-1]  # count of finite scores in bin j and higher
    fars, tars = [], []
    for far in np.logspace(math.log10(1.0 / scores.impostors), 0.0, points):
        allowed = allowed_false_accepts(scores.impostors, float(far))
        if allowed < len(scores.top_impostor_scores):
            threshold = far_threshold(scores.top_impostor_scores, scores.impostors, float(far))
        else:
            within = np.flatnonzero(above <= allowed)
            threshold = edges[within[0]] if within.size else -math.inf
        fars.append(far)
        tars.append(float(np.mean(genuine > threshold)) if genuine.size else math.nan)
    return np.array(fars), np.array(tars)


def evaluate_megaface(
    model_or_embedder: Any,
    root: str | Path,
    flip: bool = True,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
    refined: bool = True,
    seed: int = 0,
    max_rank: int = MAX_RANK,
) -> MegaFaceEvaluation:
    """MegaFace Challenge 1 of a test pack folder (one process; ``ghostfacenets evaluate --megaface`` under
    ``torchrun`` shards the embedding). Scoring runs on ``device`` when it is a GPU, else on the CPU."""
    megaface = read_megaface(root, refined)
    embedder: Embedder = load_embedder(model_or_embedder, device)
    features = embed_job(embedder, megaface.job, flip, batch_size, progress)
    scoring = resolve_device(device)
    return megaface.evaluate(features, flip, seed, max_rank, scoring if scoring.type == "cuda" else "cpu")
