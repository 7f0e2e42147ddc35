"""Margins on the target logit: ArcFace, CosFace, combined (m1, m2, m3); and the logit scale schedule.

All margins are one formula (insightface's combined margin): the target cosine ``cos(theta)`` becomes
``cos(m1 * theta + m2) - m3``; ArcFace is (1, m, 0), CosFace (1, 0, m). Sub-center ArcFace is ArcFace on the
maximum cosine over K sub-centres per class (taken in :mod:`ghostfacenets.losses.partial_fc`).

Where the target angle is so large that ``m1 * theta + m2`` passes pi the formula stops decreasing; the official
GhostFaceNets code (Keras_insightface ``ArcfaceLoss``) then uses ``2 * (-1 - m3) - target`` instead, which keeps the
logit continuous and decreasing (spec 3: for ArcFace ``-2 - cos(theta + m)``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Fallback = Literal["official", "insightface", "none"]
MARGIN_PRESETS: dict[str, tuple[float, float, float]] = {
    "arcface": (1.0, 0.5, 0.0),
    "subcenter": (1.0, 0.5, 0.0),
    "cosface": (1.0, 0.0, 0.35),
}
_ACOS_CLAMP = 1.0 - 1e-7  # acos has an infinite derivative at +-1


class CombinedMargin(nn.Module):
    """Cosine logits (N, C) and labels (N,) -> scaled logits with the margin on each row's target column.

    Labels of -1 mark rows whose class is not among the columns (another rank's class centres): left unchanged.
    ``fallback``: "official" (GhostFaceNets/Keras_insightface), "insightface" (arcface_torch's
    ``cos(theta) - sin(pi - m2) * m2`` past the threshold) or "none".
    """

    def __init__(self, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0, fallback: Fallback = "official") -> None:
        super().__init__()
        if m1 <= 0:
            raise ValueError(f"m1 must be positive, got {m1}")
        if fallback not in ("official", "insightface", "none"):
            raise ValueError(f"fallback must be 'official', 'insightface' or 'none', got {fallback!r}")
        self.m1, self.m2, self.m3, self.fallback = float(m1), float(m2), float(m3), fallback
        # Target cosines at or below this value have m1 * theta + m2 >= pi. Keras_insightface takes
        # cos((pi - m2) / m1) without the min: the same whenever (pi - m2) / m1 <= pi, which holds for every
        # preset and for m1 >= 1 - m2 / pi. Past that (e.g. m1 = 0.8, m2 = 0) its angle exceeds pi, the Keras
        # threshold rises above -1 and it applies the fallback to targets whose m1 * theta + m2 never reaches pi;
        # here the threshold stays at -1 (cos(pi)) and such targets keep the margin formula.
        self.threshold = math.cos(min(math.pi, (math.pi - self.m2) / self.m1))

    def extra_repr(self) -> str:
        return f"m1={self.m1}, m2={self.m2}, m3={self.m3}, fallback={self.fallback}"

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        """The margin formula applied to target cosines (any shape)."""
        if self.m1 == 1.0 and self.m2 == 0.0:
            margined = cosine - self.m3
        else:
            theta = torch.acos(cosine.clamp(-_ACOS_CLAMP, _ACOS_CLAMP))
            margined = torch.cos(self.m1 * theta + self.m2) - self.m3
        if self.fallback == "official":
            return torch.where(cosine > self.threshold, margined, 2 * (-1 - self.m3) - margined)
        if self.fallback == "insightface":
            return torch.where(cosine > self.threshold, margined, cosine - math.sin(math.pi - self.m2) * self.m2)
        return margined

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
        # Gather/scatter with a mask rather than boolean indexing: no host synchronisation on CUDA.
        valid = (labels >= 0).unsqueeze(1)
        columns = labels.clamp_min(0).unsqueeze(1)
        target = cosine.gather(1, columns)
        logits = cosine.scatter(1, columns, torch.where(valid, self.target_logit(target), target))
        return logits * scale


def margin_from_name(
    name: str,
    margin: float | None = None,
    m1: float = 1.0,
    m2: float = 0.5,
    m3: float = 0.0,
    fallback: Fallback = "official",
) -> CombinedMargin:
    """``arcface`` / ``subcenter`` (angular margin, default 0.5), ``cosface`` (cosine margin, default 0.35) or
    ``combined`` (m1, m2, m3 as given). A value that does not apply to ``name`` (``margin`` for combined; m1, m2,
    m3 other than their defaults 1, 0.5, 0 for the others) is a ValueError rather than silently ignored."""
    if name == "combined":
        if margin is not None:
            raise ValueError("the combined margin takes m1, m2 and m3, not margin")
        return CombinedMargin(m1, m2, m3, fallback)
    if name not in MARGIN_PRESETS:
        raise ValueError(f"unknown margin {name!r}: use arcface, cosface, subcenter or combined")
    if (m1, m2, m3) != (1.0, 0.5, 0.0):
        raise ValueError(f"m1, m2 and m3 apply to the combined margin only; set the {name} margin with margin")
    p1, p2, p3 = MARGIN_PRESETS[name]
    if margin is not None:
        p2, p3 = (margin, 0.0) if name != "cosface" else (0.0, margin)
    return CombinedMargin(p1, p2, p3, fallback)


@dataclass(frozen=True)
class ScaleSchedule:
    """Piecewise-constant logit scale by epoch: ``[(0, 32), (1, 64)]`` is the paper's 32 for epoch 0, then 64."""

    points: tuple[tuple[float, float], ...]

    @classmethod
    def from_pairs(cls, pairs: Sequence[Sequence[float]]) -> ScaleSchedule:
        points = tuple(sorted((float(e), float(s)) for e, s in pairs))
        if not points or points[0][0] > 0:
            raise ValueError(f"a scale schedule must start at epoch 0, got {list(pairs)}")
        if any(s <= 0 for _, s in points):
            raise ValueError(f"scales must be positive, got {list(pairs)}")
        return cls(points)

    def __call__(self, epoch: float) -> float:
        starts = [e for e, _ in self.points]
        return self.points[max(0, bisect.bisect_right(starts, epoch) - 1)][1]
