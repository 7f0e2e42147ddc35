"""The liveness check of detected faces: a score per face (the fused MiniFASNets' real-face probability), the
threshold with its source, and the decision; :class:`SpoofSuspectedError` for a face judged not live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GhostFaceNetsError
from ..models.minifasnet import REAL_CLASS
from .crop import liveness_patches
from .model import DEFAULT_THRESHOLD, DEFAULT_THRESHOLD_SOURCE, PATCHES, MiniFASNetFusion
from .runtime import LivenessModel, load_liveness

DECISION_RULE = "live if the liveness score (mean real-face probability of the two MiniFASNets) > threshold"


class SpoofSuspectedError(GhostFaceNetsError):
    """A face judged not live: a presentation attack (a print, a screen, a mask) is suspected."""

    def __init__(self, message: str, result: LivenessResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class LivenessThreshold:
    """A decision threshold on the liveness score and where it comes from (``source``: "user", "calibrated" or
    "default")."""

    value: float
    source: str
    note: str = ""
    bpcer: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.value, "threshold_source": self.source, "threshold_bpcer": self.bpcer}


@dataclass(frozen=True)
class LivenessResult:
    """One face's liveness: ``score`` in [0, 1] (the real-face probability), the ``threshold`` and the decision."""

    score: float
    is_live: bool
    threshold: LivenessThreshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "is_live": self.is_live,
            "threshold": self.threshold.value,
            "threshold_source": self.threshold.source,
        }

    def describe(self) -> str:
        relation = ">" if self.is_live else "<="
        return f"liveness {self.score:.4f} {relation} threshold {self.threshold.value:.4f} ({self.threshold.source})"


def _threshold_of(metadata: dict[str, Any]) -> LivenessThreshold:
    """The threshold a weights file or export carries: calibrated by ``calibrate --liveness``, else the default."""
    recorded = metadata.get("threshold") or {}
    if recorded.get("source") == "calibrated" and isinstance(recorded.get("value"), (int, float)):
        note = (
            f"calibrated at BPCER {recorded.get('bpcer', 0):g} on {recorded.get('set', 'unnamed set')} "
            f"({recorded.get('bona_fide', '?')} live faces)"
        )
        return LivenessThreshold(float(recorded["value"]), "calibrated", note, recorded.get("bpcer"))
    return LivenessThreshold(DEFAULT_THRESHOLD, "default", DEFAULT_THRESHOLD_SOURCE)


class LivenessChecker:
    """Judges whether detected faces are live (passive, single frame).

    ``model``: None for the shipped MiniFASNet weights, a liveness ``.safetensors`` file (e.g. written by
    ``calibrate --liveness --write``), an exported ``.onnx`` / ``.pte`` / ``.tflite`` file, or a loaded
    :class:`~ghostfacenets.liveness.runtime.LivenessModel`. ``threshold``: fixed threshold (else the one the model
    file carries, else :data:`~ghostfacenets.liveness.model.DEFAULT_THRESHOLD`). ``device``, ``backend``,
    ``threads``: how the networks run (:func:`~ghostfacenets.liveness.runtime.load_liveness`).
    """

    def __init__(
        self,
        model: str | Path | MiniFASNetFusion | LivenessModel | None = None,
        *,
        threshold: float | None = None,
        device: str | torch.device | None = None,
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise GhostFaceNetsError(f"a liveness threshold lies in [0, 1], got {threshold}")
        self.model = model if isinstance(model, LivenessModel) else load_liveness(model, device, backend, threads)
        self.threshold = (
            LivenessThreshold(float(threshold), "user", "given by the user")
            if threshold is not None
            else _threshold_of(self.model.metadata)
        )

    def scores(self, image: np.ndarray, boxes: list[Any]) -> np.ndarray:
        """The liveness score of each face box (x1, y1, x2, y2, or anything with a ``box``) in a uint8 RGB image."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise GhostFaceNetsError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
        patches = liveness_patches(image, boxes, [p.scale for p in PATCHES])
        return self.model.probabilities(*patches)[:, REAL_CLASS].astype(np.float64)

    def result(self, score: float) -> LivenessResult:
        """The decision for one score at this checker's threshold."""
        return LivenessResult(float(score), bool(score > self.threshold.value), self.threshold)

    def check(self, image: np.ndarray, boxes: list[Any]) -> list[LivenessResult]:
        """The liveness of each face box in a uint8 RGB image."""
        return [self.result(s) for s in self.scores(image, boxes)]

    def require_live(self, image: np.ndarray, boxes: list[Any], name: str) -> list[LivenessResult]:
        """:meth:`check`, raising :class:`SpoofSuspectedError` (naming ``name`` and the face) when a face is not
        judged live."""
        results = self.check(image, boxes)
        for index, result in enumerate(results):
            if not result.is_live:
                which = f" face {index}" if len(results) > 1 else ""
                raise SpoofSuspectedError(
                    f"{name}{which}: spoof suspected, the face does not look live ({result.describe()}); refused",
                    result,
                )
        return results
