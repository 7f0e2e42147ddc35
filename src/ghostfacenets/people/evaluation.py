"""``evaluate --clustering``: grouping measured on identity folders, against DBSCAN and HDBSCAN on the same
embeddings, and the quality score's error-versus-reject curve on the folder's pairs.

Each image of an identity folder is one face: an aligned 112x112 crop as it is, any other photo through the detector
(its largest face; photos without a face are listed and left out). Every image is its own photo. The embeddings are
the recognizer's (flip as set); quality as :mod:`.quality` measures it, the norm relative to the folder's median.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.folders import scan_identity_folder
from ..data.images import ImageError, load_image
from ..data.transforms import INPUT_SIZE
from ..errors import GhostFaceNetsError
from .faces import describe_faces
from .grouping import SETTINGS_FAR, GroupingSettings
from .memory import MemoryPeople
from .metrics import ClusteringScores, clustering_scores
from .quality import DEFAULT_QUALITY, PARTS, QualityModel, QualityParts

if TYPE_CHECKING:
    from ..pipeline.detect import Face
    from ..pipeline.recognizer import FaceRecognizer

REJECT_FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
ERC_FMR = 1e-2  # the false-match rate at which the error-versus-reject curve measures the FNMR


@dataclass
class FolderFaces:
    """The faces of an identity folder: one per image that has one, with its person, embedding and quality."""

    name: str
    people: list[str]
    labels: np.ndarray  # (N,) index into ``people``
    paths: list[str]  # relative to the folder
    embeddings: np.ndarray  # (N, D) L2-normalised
    parts: list[QualityParts]
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def qualities(self, model: QualityModel = DEFAULT_QUALITY) -> np.ndarray:
        return np.array([model.score(p) for p in self.parts])


def read_clustering_folder(
    recognizer: FaceRecognizer, folder: str | Path, progress: Callable[[int], None] | None = None
) -> FolderFaces:
    """Detect (unless aligned crops), align and embed every image of an identity folder, with quality parts."""
    from ..data.align import align_face

    scanned = scan_identity_folder(folder)
    crops: list[np.ndarray] = []
    faces: list[Face | None] = []
    labels: list[int] = []
    paths: list[str] = []
    no_face, unreadable = [], []
    for path, label in zip(scanned.paths, scanned.labels):
        relative = str(path.relative_to(scanned.root))
        try:
            pixels = load_image(path)
        except (ImageError, OSError):
            unreadable.append(relative)
            continue
        if pixels.shape[:2] == (INPUT_SIZE, INPUT_SIZE):
            crops.append(pixels)
            faces.append(None)
        else:
            found = recognizer.detect(pixels)
            if not found:
                no_face.append(relative)
                continue
            crops.append(align_face(pixels, found[0].landmarks))
            faces.append(found[0])
        labels.append(label)
        paths.append(relative)
        if progress is not None:
            progress(1)
    if len(crops) < 2:
        raise GhostFaceNetsError(f"{folder}: fewer than two faces found; nothing to group")
    embeddings, parts, _ = describe_faces(recognizer, np.stack(crops).astype(np.uint8), faces)
    return FolderFaces(
        Path(folder).name, scanned.names, np.array(labels), paths, embeddings, parts, no_face, unreadable
    )


# ------------------------------------------------------------------------------------------------ grouping
def group_faces(faces: FolderFaces, settings: GroupingSettings, quality: QualityModel = DEFAULT_QUALITY) -> np.ndarray:
    """Our grouping of the folder's faces, in folder order (one photo each): person labels, -1 unsorted."""
    people = MemoryPeople(faces.embeddings.shape[1])
    people.add(faces.embeddings, range(len(faces.labels)), faces.qualities(quality).tolist())
    people.place(settings)
    return people.labels()


def cosine_distances(embeddings: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - embeddings.astype(np.float64) @ embeddings.T.astype(np.float64), 0.0, 2.0)


def _sklearn_cluster() -> Any:
    try:
        import sklearn.cluster
    except ImportError as exc:
        raise GhostFaceNetsError(
            f"the DBSCAN and HDBSCAN baselines need scikit-learn: pip install 'ghostfacenets[cluster]' ({exc})"
        ) from None
    return sklearn.cluster


def dbscan_labels(distances: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    DBSCAN = _sklearn_cluster().DBSCAN

    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distances)


def hdbscan_labels(distances: np.ndarray, min_cluster_size: int, min_samples: int) -> np.ndarray:
    HDBSCAN = _sklearn_cluster().HDBSCAN

    return HDBSCAN(
        min_cluster_size=min_cluster_size, min_samples=min_samples, metric="precomputed", copy=True
    ).fit_predict(distances)


def calibrated_settings(
    faces: FolderFaces, quality: QualityModel = DEFAULT_QUALITY, far: float = SETTINGS_FAR, **changes: Any
) -> GroupingSettings:
    """Grouping settings from labelled faces, as a calibration would set them: :meth:`GroupingSettings.for_threshold`
    at the cosine threshold of FAR ``far`` on the pairs of faces that pass the quality gate (a calibration set is
    clean; faces below the gate are never grouped; all faces when those passing hold no same and different pairs)."""
    from ..evaluate.metrics import threshold_at_far

    gate = changes.get("min_quality", GroupingSettings().min_quality)
    kept = faces.qualities(quality) >= gate
    _, scores, same = all_pairs(faces.labels[kept], faces.embeddings[kept])
    if same.all() or not same.any():  # too few faces pass: every face, rather than no threshold
        _, scores, same = all_pairs(faces.labels, faces.embeddings)
    threshold, _ = threshold_at_far(scores, same, far)
    return GroupingSettings.for_threshold(round(threshold, 4), **changes)


@dataclass(frozen=True)
class Baselines:
    """DBSCAN's and HDBSCAN's parameters (tuned on other data than they are reported on)."""

    dbscan_eps: float = 0.5
    dbscan_min_samples: int = 3
    hdbscan_min_cluster_size: int = 3
    hdbscan_min_samples: int = 2
    tuned_on: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dbscan": {"eps": self.dbscan_eps, "min_samples": self.dbscan_min_samples},
            "hdbscan": {"min_cluster_size": self.hdbscan_min_cluster_size, "min_samples": self.hdbscan_min_samples},
            "tuned_on": self.tuned_on,
        }


def tune_baselines(faces: FolderFaces) -> Baselines:
    """DBSCAN's eps and min_samples and HDBSCAN's min_cluster_size and min_samples that give the best BCubed F on
    ``faces`` (a grid; ties to the smaller values)."""
    distances = cosine_distances(faces.embeddings)
    best_db = max(
        ((eps, m) for eps in np.round(np.arange(0.05, 1.001, 0.025), 3) for m in (2, 3, 4, 5)),
        key=lambda p: clustering_scores(faces.labels, dbscan_labels(distances, p[0], p[1])).bcubed_f,
    )
    best_h = max(
        ((c, m) for c in (2, 3, 4, 5, 6, 8) for m in (1, 2, 3, 4, 5)),
        key=lambda p: clustering_scores(faces.labels, hdbscan_labels(distances, p[0], p[1])).bcubed_f,
    )
    return Baselines(float(best_db[0]), int(best_db[1]), int(best_h[0]), int(best_h[1]), faces.name)


def evaluate_clustering(
    faces: FolderFaces, settings: GroupingSettings, baselines: Baselines, quality: QualityModel = DEFAULT_QUALITY
) -> dict[str, ClusteringScores]:
    """Scores of our grouping and of DBSCAN and HDBSCAN on the same faces."""
    distances = cosine_distances(faces.embeddings)
    return {
        "people": clustering_scores(faces.labels, group_faces(faces, settings, quality)),
        "dbscan": clustering_scores(
            faces.labels, dbscan_labels(distances, baselines.dbscan_eps, baselines.dbscan_min_samples)
        ),
        "hdbscan": clustering_scores(
            faces.labels,
            hdbscan_labels(distances, baselines.hdbscan_min_cluster_size, baselines.hdbscan_min_samples),
        ),
    }


# ------------------------------------------------------------------------------------------------ quality
@dataclass(frozen=True)
class RejectCurve:
    """False non-match rate at a fixed false-match rate ``fmr`` (the threshold set again on the pairs left) after
    rejecting the lowest-quality share of faces, for each share in ``fractions``."""

    name: str
    fmr: float
    fractions: tuple[float, ...]
    fnmr: tuple[float, ...]
    thresholds: tuple[float, ...]
    genuine_left: tuple[int, ...]

    @property
    def area(self) -> float:
        """Mean FNMR over the fractions (lower is better)."""
        return float(np.mean(self.fnmr))

    def to_dict(self) -> dict[str, Any]:
        return {
            "fmr": self.fmr,
            "fractions": list(self.fractions),
            "fnmr": [round(v, 6) for v in self.fnmr],
            "thresholds": [round(v, 6) for v in self.thresholds],
            "genuine_pairs_left": list(self.genuine_left),
            "mean_fnmr": round(self.area, 6),
        }


def all_pairs(labels: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of faces: their positions (2, P), cosine and whether they are one person."""
    first, second = np.triu_indices(len(labels), k=1)
    scores = np.einsum("ij,ij->i", embeddings[first].astype(np.float64), embeddings[second].astype(np.float64))
    return np.stack([first, second]), scores, labels[first] == labels[second]


def error_versus_reject(
    name: str,
    labels: np.ndarray,
    embeddings: np.ndarray,
    quality: np.ndarray,
    fmr: float = ERC_FMR,
    fractions: Sequence[float] = REJECT_FRACTIONS,
) -> RejectCurve:
    """The error-versus-reject curve (Grother and Tabassi 2007) of a quality score on all pairs of a set: the
    lowest-quality ``fraction`` of faces is rejected (ties broken by position), the pairs holding one of them
    dropped, and the FNMR of what is left measured at the threshold that gives FMR ``fmr`` on what is left."""
    from ..evaluate.metrics import threshold_at_far

    pairs, scores, same = all_pairs(labels, embeddings)
    order = np.lexsort((np.arange(len(quality)), quality))  # lowest quality first
    fnmr, thresholds, left = [], [], []
    for fraction in fractions:
        rejected = np.zeros(len(quality), bool)
        rejected[order[: math.floor(fraction * len(quality) + 1e-9)]] = True
        kept = ~rejected[pairs[0]] & ~rejected[pairs[1]]
        threshold, miss = threshold_at_far(scores[kept], same[kept], fmr)
        fnmr.append(miss)
        thresholds.append(threshold)
        left.append(int((kept & same).sum()))
    return RejectCurve(name, fmr, tuple(fractions), tuple(fnmr), tuple(thresholds), tuple(left))


def quality_curves(
    faces: FolderFaces, model: QualityModel = DEFAULT_QUALITY, fmr: float = ERC_FMR
) -> list[RejectCurve]:
    """The error-versus-reject curve of the combined score, of each part alone, and of no quality (a seeded random
    order: what rejecting without knowing quality gives)."""
    curves = [error_versus_reject("quality", faces.labels, faces.embeddings, faces.qualities(model), fmr)]
    for part in PARTS:
        values = [getattr(p, part) for p in faces.parts]
        if any(v is None for v in values):
            continue
        ramp = model.ramps[part]
        signed = np.array(values, np.float64) * (1.0 if ramp.high >= ramp.low else -1.0)
        curves.append(error_versus_reject(part, faces.labels, faces.embeddings, signed, fmr))
    random = np.random.default_rng(0).permutation(len(faces.labels)).astype(np.float64)
    curves.append(error_versus_reject("random", faces.labels, faces.embeddings, random, fmr))
    return curves
