"""IJB-B / IJB-C evaluation in insightface's layout: 1:1 template verification and 1:N identification.

Layout of ``root`` (insightface's IJB release, ``<t>`` = ``ijbb`` or ``ijbc``)::

    meta/<t>_face_tid_mid.txt          "<image name> <template id> <media id>" per face
    meta/<t>_template_pair_label.txt   "<template 1> <template 2> <1 same | 0 different>" per pair
    meta/<t>_name_5pts_score.txt       "<image name> x1 y1 ... x5 y5 <detector score>" per face
    meta/<t>_1N_gallery_G1.csv, _G2.csv (IJB-C) or _S1.csv, _S2.csv (IJB-B), meta/<t>_1N_probe_mixed.csv
                                       CSV with a header, first columns TEMPLATE_ID,SUBJECT_ID (1:N only)
    loose_crop/<image name>            the loose face crops

Each crop is aligned by its five points to the ArcFace template (112x112) and embedded (flip: emb(x) + emb(flip x)).
insightface's pooling follows: optional per-image L2 normalisation (``normalize_images``; off by default, so image
norms weigh the pooling: insightface "N1", Keras_insightface ``use_norm_score=False``), features times the detector
score (``detector_score``, on by default), then the mean per media, the sum of media per template, and L2
normalisation of each template. Scores are cosine similarities of templates.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import load_image
from ..data.transforms import INPUT_SIZE
from ..errors import GhostFaceNetsError
from ..inference import Embedder, load_embedder
from .distributed import ImageJob, embed_job
from .metrics import allowed_false_accepts, roc_auc, roc_curve, tar_at_far

FPIR_TARGETS = {"1e-1": 1e-1, "1e-2": 1e-2, "1e-3": 1e-3, "1e-4": 1e-4}
RANKS = (1, 5, 10)
PAIR_CHUNK = 100_000


class IJBError(GhostFaceNetsError):
    """An IJB folder that does not have insightface's layout."""


@dataclass(frozen=True)
class IJBLayout:
    """Where the files of one IJB set are."""

    root: Path
    target: str  # "ijbb" or "ijbc"
    face_tid_mid: Path
    template_pair_label: Path
    name_5pts_score: Path
    images: Path
    galleries: dict[str, Path]  # "G1" -> file; empty without 1:N files
    probes: Path | None


def find_layout(root: str | Path) -> IJBLayout:
    """Locate the meta files and crops of an IJB folder (the one holding ``meta/`` and ``loose_crop/``)."""
    root = Path(root)
    meta = root / "meta"
    found = sorted(meta.glob("*_face_tid_mid.txt")) if meta.is_dir() else []
    if len(found) != 1:
        raise IJBError(
            f"{root}: expected one meta/<ijbb|ijbc>_face_tid_mid.txt (insightface's IJB layout, see "
            f"docs/evaluation.md), found {len(found)}"
        )
    target = found[0].name[: -len("_face_tid_mid.txt")]
    files = {kind: meta / f"{target}_{kind}.txt" for kind in ("template_pair_label", "name_5pts_score")}
    for path in files.values():
        if not path.is_file():
            raise IJBError(f"{path}: missing (insightface's IJB layout, see docs/evaluation.md)")
    images = root / "loose_crop"
    if not images.is_dir():
        raise IJBError(f"{images}: missing folder of loose face crops")
    galleries = {p.stem.rsplit("_", 1)[-1]: p for p in sorted(meta.glob(f"{target}_1N_gallery_*.csv"))}
    probes = meta / f"{target}_1N_probe_mixed.csv"
    return IJBLayout(
        root,
        target,
        found[0],
        files["template_pair_label"],
        files["name_5pts_score"],
        images,
        galleries,
        probes if probes.is_file() else None,
    )


def _read_rows(path: Path, columns: int) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != columns:
                raise IJBError(f"{path}:{number}: expected {columns} fields, got {len(fields)}")
            rows.append(fields)
    if not rows:
        raise IJBError(f"{path}: empty")
    return rows


def _ints(path: Path, rows: list[list[str]], columns: slice) -> np.ndarray:
    try:
        return np.array([[int(v) for v in row[columns]] for row in rows], dtype=np.int64)
    except ValueError as exc:
        raise IJBError(f"{path}: {exc}") from None


def _read_int_table(path: Path, columns: int) -> np.ndarray:
    try:
        table = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise IJBError(f"{path}: expected {columns} integers per line ({exc})") from None
    if table.shape[1] != columns or len(table) == 0:
        raise IJBError(f"{path}: expected {columns} integers per line, got shape {table.shape}")
    return table


@dataclass(frozen=True)
class IJBMeta:
    """The faces (name, template, media, five points, detector score) and the 1:1 template pairs."""

    names: list[str]
    templates: np.ndarray
    medias: np.ndarray
    landmarks: np.ndarray  # (N, 5, 2)
    detector_scores: np.ndarray
    pairs: np.ndarray  # (P, 2) template ids
    labels: np.ndarray  # (P,) bool


def read_meta(layout: IJBLayout) -> IJBMeta:
    """Read and cross-check the three meta files."""
    faces = _read_rows(layout.face_tid_mid, 3)
    ids = _ints(layout.face_tid_mid, faces, slice(1, 3))
    points = {}
    for number, row in enumerate(_read_rows(layout.name_5pts_score, 12), 1):
        try:
            points[row[0]] = np.array([float(v) for v in row[1:]], dtype=np.float64)
        except ValueError as exc:
            raise IJBError(f"{layout.name_5pts_score}:{number}: {exc}") from None
    names = [row[0] for row in faces]
    missing = [n for n in names if n not in points]
    if missing:
        raise IJBError(f"{layout.name_5pts_score}: no landmarks for {len(missing)} face(s), e.g. {missing[0]}")
    values = np.stack([points[n] for n in names])
    pairs = _read_int_table(layout.template_pair_label, 3)  # 15.7 M lines for IJB-C: numpy's C parser
    if not np.isin(pairs[:, 2], (0, 1)).all():
        raise IJBError(f"{layout.template_pair_label}: labels must be 1 (same) or 0 (different)")
    unknown = np.setdiff1d(pairs[:, :2], ids[:, 0])
    if unknown.size:
        raise IJBError(f"{layout.template_pair_label}: template(s) without faces, e.g. {unknown[0]}")
    return IJBMeta(
        names, ids[:, 0], ids[:, 1], values[:, :10].reshape(-1, 5, 2), values[:, 10], pairs[:, :2], pairs[:, 2] == 1
    )


def read_template_subjects(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unique (template ids, subject ids) of a 1:N gallery or probe CSV (header, TEMPLATE_ID, SUBJECT_ID, ...)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise IJBError(f"{path}: expected a header and at least one row")
    try:
        pairs = np.array([[int(row[0]), int(row[1])] for row in rows[1:]], dtype=np.int64)
    except (ValueError, IndexError) as exc:
        raise IJBError(f"{path}: expected TEMPLATE_ID,SUBJECT_ID columns ({exc})") from None
    templates, first = np.unique(pairs[:, 0], return_index=True)
    subjects = pairs[first, 1]
    conflicting = subjects[np.searchsorted(templates, pairs[:, 0])] != pairs[:, 1]
    if conflicting.any():
        raise IJBError(f"{path}: template {pairs[conflicting, 0][0]} listed with two subjects")
    return templates, subjects


@dataclass(frozen=True)
class SearchLists:
    """The 1:N lists: (template ids, subject ids) of the probes and of each gallery ("G1", "G2" or "S1", "S2")."""

    probes: tuple[np.ndarray, np.ndarray]
    galleries: dict[str, tuple[np.ndarray, np.ndarray]]


def read_search_lists(layout: IJBLayout, meta: IJBMeta) -> SearchLists | None:
    """Read and check the 1:N probe and gallery CSVs (every template must have faces); None without them. Run before
    embedding, so that a damaged list fails in seconds rather than after hours of embedding."""
    if not layout.galleries or layout.probes is None:
        return None
    known = np.unique(meta.templates)
    lists = {}
    for path in (layout.probes, *layout.galleries.values()):
        lists[path] = read_template_subjects(path)
        _rows_of(known, lists[path][0], path.name)
    return SearchLists(lists[layout.probes], {name: lists[path] for name, path in layout.galleries.items()})


def _aligned_crop(path: Path, landmarks: np.ndarray) -> np.ndarray:
    from ..data.align import align_face

    return align_face(load_image(path), landmarks)


def face_job(layout: IJBLayout, meta: IJBMeta) -> ImageJob:
    """Every face of the set, each read and aligned by its five points when loaded."""
    return ImageJob(
        f"{layout.target} faces",
        len(meta.names),
        lambda indices: np.stack([_aligned_crop(layout.images / meta.names[i], meta.landmarks[i]) for i in indices]),
    )


def embed_faces(
    embedder: Embedder,
    layout: IJBLayout,
    meta: IJBMeta,
    flip: bool = True,
    batch_size: int = 128,
    progress: bool = True,
    workers: int = 4,
) -> np.ndarray:
    """Embeddings (N, D) of every face, streamed: crops are read and aligned in threads while batches embed."""
    return embed_job(embedder, face_job(layout, meta), flip, batch_size, progress, workers)


def template_features(
    features: np.ndarray,
    templates: np.ndarray,
    medias: np.ndarray,
    detector_scores: np.ndarray | None = None,
    normalize_images: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(unique template ids, L2-normalised template features) by insightface's pooling (see the module doc)."""
    x = np.asarray(features, dtype=np.float64)
    if normalize_images:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if detector_scores is not None:
        x = x * np.asarray(detector_scores, dtype=np.float64)[:, None]
    keys, media_index = np.unique(np.stack([templates, medias], axis=1), axis=0, return_inverse=True)
    media_index = media_index.reshape(-1)
    media_means = _sum_rows(x, media_index, len(keys)) / np.bincount(media_index, minlength=len(keys))[:, None]
    unique_templates, template_index = np.unique(keys[:, 0], return_inverse=True)
    pooled = _sum_rows(media_means, template_index.reshape(-1), len(unique_templates))
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return unique_templates, pooled


def _sum_rows(x: np.ndarray, groups: np.ndarray, count: int) -> np.ndarray:
    """Row sums of ``x`` (float64) per group id (torch's index_add_: several times faster than np.add.at)."""
    out = torch.zeros((count, x.shape[1]), dtype=torch.float64)
    return out.index_add_(0, torch.from_numpy(groups.astype(np.int64)), torch.from_numpy(x)).numpy()


def _rows_of(unique_templates: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    index = np.searchsorted(unique_templates, wanted)
    index = np.minimum(index, len(unique_templates) - 1)
    if not np.array_equal(unique_templates[index], wanted):
        missing = wanted[unique_templates[index] != wanted]
        raise IJBError(f"{what}: template {missing[0]} has no faces in the face/template/media list")
    return index


def verification_1to1(unique_templates: np.ndarray, feats: np.ndarray, meta: IJBMeta) -> dict[str, Any]:
    """TAR at FAR 1e-6 .. 1e-1 and AUC of the 1:1 template pairs."""
    rows_a = _rows_of(unique_templates, meta.pairs[:, 0], "1:1 pairs")
    rows_b = _rows_of(unique_templates, meta.pairs[:, 1], "1:1 pairs")
    scores = np.empty(len(rows_a))
    for start in range(0, len(rows_a), PAIR_CHUNK):  # IJB-C has 15.7 M pairs: bounded memory
        chunk = slice(start, start + PAIR_CHUNK)
        scores[chunk] = np.einsum("ij,ij->i", feats[rows_a[chunk]], feats[rows_b[chunk]])
    result: dict[str, Any] = {
        "pairs": len(scores),
        "same_pairs": int(meta.labels.sum()),
        "tar_at_far": tar_at_far(scores, meta.labels),
    }
    result["auc"] = roc_auc(*roc_curve(scores, meta.labels)[:2]) if 0 < meta.labels.sum() < len(scores) else None
    return result


def search_1toN(
    probe_feats: np.ndarray, probe_subjects: np.ndarray, gallery_feats: np.ndarray, gallery_subjects: np.ndarray
) -> dict[str, Any]:
    """Open-set search of every probe in one gallery.

    Mated probes (subject in the gallery): rank of the best-scoring template of their subject. Non-mated probes: their
    top score. TPIR at FPIR f: share of mated probes found at rank 1 with a score above the lowest threshold that
    at most a share f of non-mated searches exceed (None with fewer than 1/f non-mated probes).
    """
    similarity = probe_feats @ gallery_feats.T
    mated = np.isin(probe_subjects, gallery_subjects)
    is_mate = probe_subjects[mated, None] == gallery_subjects[None, :]
    sims = similarity[mated]
    mate_score = np.where(is_mate, sims, -np.inf).max(axis=1)
    ranks = 1 + np.sum(np.where(is_mate, -np.inf, sims) > mate_score[:, None], axis=1)  # ties favour the mate
    non_mated_top = np.sort(similarity[~mated].max(axis=1, initial=-np.inf))[::-1]
    tpir: dict[str, float | None] = {}
    for key, fpir in FPIR_TARGETS.items():
        allowed = allowed_false_accepts(len(non_mated_top), fpir)
        if allowed < 1 or not mated.any():
            tpir[key] = None
            continue
        threshold = non_mated_top[allowed] if allowed < len(non_mated_top) else -np.inf
        tpir[key] = float(np.mean((ranks == 1) & (mate_score > threshold)))
    return {
        "mated_probes": int(mated.sum()),
        "non_mated_probes": int((~mated).sum()),
        "gallery_templates": len(gallery_subjects),
        **{f"rank{r}": (float(np.mean(ranks <= r)) if mated.any() else None) for r in RANKS},
        "tpir_at_fpir": tpir,
        "_hits": {r: int(np.sum(ranks <= r)) for r in RANKS},
    }


def identification_1toN(
    lists: SearchLists | None, unique_templates: np.ndarray, feats: np.ndarray
) -> dict[str, Any] | None:
    """Rank-k and TPIR at FPIR of the mixed probes against each gallery; None without the 1:N lists."""
    if lists is None:
        return None
    probe_templates, probe_subjects = lists.probes
    probe_feats = feats[_rows_of(unique_templates, probe_templates, "1:N probes")]
    galleries, hits, mated = {}, dict.fromkeys(RANKS, 0), 0
    for name, (templates, subjects) in lists.galleries.items():
        result = search_1toN(probe_feats, probe_subjects, feats[_rows_of(unique_templates, templates, name)], subjects)
        for r, count in result.pop("_hits").items():
            hits[r] += count
        mated += result["mated_probes"]
        galleries[name] = result
    tpir = {}
    for key in FPIR_TARGETS:
        values = [g["tpir_at_fpir"][key] for g in galleries.values()]
        tpir[key] = None if any(v is None for v in values) else float(np.mean(values))
    return {
        "probes": len(probe_templates),
        **{f"rank{r}": (hits[r] / mated if mated else None) for r in RANKS},
        "tpir_at_fpir": tpir,
        "galleries": galleries,
    }


@dataclass(frozen=True)
class IJBSet:
    """An IJB folder read and checked for evaluation: where its files are, its faces and pairs, its 1:N lists."""

    layout: IJBLayout
    meta: IJBMeta
    search_lists: SearchLists | None

    @property
    def job(self) -> ImageJob:
        return face_job(self.layout, self.meta)

    def evaluate(
        self, features: np.ndarray, flip: bool = True, detector_score: bool = True, normalize_images: bool = False
    ) -> dict[str, Any]:
        """1:1 verification and (with the 1:N lists) identification from the face embeddings (N, D) in the order
        of ``*_face_tid_mid.txt``."""
        meta = self.meta
        if len(features) != len(meta.names):
            raise IJBError(f"{len(features)} features for {len(meta.names)} faces")
        unique_templates, feats = template_features(
            features, meta.templates, meta.medias, meta.detector_scores if detector_score else None, normalize_images
        )
        return {
            "target": self.layout.target.upper(),
            "faces": len(meta.names),
            "templates": len(unique_templates),
            "flip": flip,
            "detector_score": detector_score,
            "normalize_images": normalize_images,
            "verification": verification_1to1(unique_templates, feats, meta),
            "identification": identification_1toN(self.search_lists, unique_templates, feats),
        }


def read_ijb(root: str | Path) -> IJBSet:
    """Locate, read and cross-check every file of an IJB folder (the 1:N lists too: a damaged list fails in seconds
    rather than after the hours IJB-C takes to embed)."""
    layout = find_layout(root)
    meta = read_meta(layout)
    return IJBSet(layout, meta, read_search_lists(layout, meta))


def check_ijb_embedder(embedder: Embedder) -> None:
    """IJB faces are aligned to 112x112: refuse a model that needs another size."""
    if embedder.input_size not in (None, (INPUT_SIZE, INPUT_SIZE)):
        raise IJBError(
            f"{embedder.name} needs {embedder.input_size} crops; IJB faces are aligned to {INPUT_SIZE}x{INPUT_SIZE}"
        )


def evaluate_ijb(
    model_or_embedder: Any,
    root: str | Path,
    flip: bool = True,
    detector_score: bool = True,
    normalize_images: bool = False,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
    features: np.ndarray | None = None,
) -> dict[str, Any]:
    """1:1 verification (TAR at FAR) and, when the 1:N files exist, identification of one IJB folder.

    ``features``: precomputed face embeddings (N, D) in the order of ``*_face_tid_mid.txt`` (skips embedding).
    """
    ijb = read_ijb(root)
    if features is None:
        embedder = load_embedder(model_or_embedder, device)
        check_ijb_embedder(embedder)
        features = embed_faces(embedder, ijb.layout, ijb.meta, flip, batch_size, progress)
    return ijb.evaluate(features, flip, detector_score, normalize_images)
