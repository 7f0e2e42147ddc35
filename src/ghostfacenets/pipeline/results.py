"""What the pipeline answers: thresholds, embedded faces, verifications and identifications (each with the dict the
CLI's ``--json`` and the service print), and its two errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GhostFaceNetsError
from ..liveness.checker import LivenessResult
from .detect import Face


class NoFaceError(GhostFaceNetsError):
    """No face was found where one was needed."""


class ThresholdError(GhostFaceNetsError):
    """No decision threshold matches the request."""


@dataclass(frozen=True)
class Threshold:
    """A cosine-similarity decision threshold (same person iff similarity > threshold) and where it comes from
    (``source``: "user", "calibrated" or "fallback")."""

    value: float
    source: str
    far: float | None = None
    set: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.value,
            "threshold_source": self.source,
            "threshold_far": self.far,
            "threshold_set": self.set,
            "threshold_note": self.note,
        }


@dataclass(frozen=True)
class FaceEmbedding:
    """A face found in an image, with its L2-normalised embedding."""

    face: Face | None  # None for an aligned crop given as is
    embedding: np.ndarray
    faces_in_image: int = 1
    liveness: LivenessResult | None = None  # when the liveness check ran


@dataclass(frozen=True)
class Verification:
    """Result of ``verify``: cosine ``similarity`` of the two faces, the ``threshold`` used and the decision."""

    similarity: float
    threshold: Threshold
    is_same: bool
    face_a: Face | None = None
    face_b: Face | None = None
    faces_in_a: int = 1
    faces_in_b: int = 1
    liveness_a: LivenessResult | None = None
    liveness_b: LivenessResult | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "similarity": round(self.similarity, 6),
            "is_same": self.is_same,
            **self.threshold.to_dict(),
        }
        for key, face, count in (("a", self.face_a, self.faces_in_a), ("b", self.face_b, self.faces_in_b)):
            record[f"face_{key}"] = face.to_dict() if face is not None else None
            record[f"faces_in_{key}"] = count
        for key, liveness in (("a", self.liveness_a), ("b", self.liveness_b)):
            if liveness is not None:
                record[f"liveness_{key}"] = liveness.to_dict()
        return record


@dataclass(frozen=True)
class Match:
    """A gallery subject, its best face's cosine similarity to the query and whether it passes the threshold."""

    name: str
    similarity: float
    is_match: bool
    subject_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject_id": self.subject_id,
            "similarity": round(self.similarity, 6),
            "is_match": self.is_match,
        }


@dataclass(frozen=True)
class Identification:
    """Result of ``identify`` for one face: the ``k`` best ``matches`` (best first) and the threshold used."""

    face: Face | None
    matches: list[Match]
    threshold: Threshold
    faces_in_image: int = 1
    liveness: LivenessResult | None = None

    @property
    def identity(self) -> str | None:
        """The best match's name if it passes the threshold, else None (unknown person)."""
        return self.matches[0].name if self.matches and self.matches[0].is_match else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "matches": [m.to_dict() for m in self.matches],
            "face": self.face.to_dict() if self.face is not None else None,
            "faces_in_image": self.faces_in_image,
            **self.threshold.to_dict(),
            **({"liveness": self.liveness.to_dict()} if self.liveness is not None else {}),
        }
