"""Learning-rate schedules as pure functions of the optimiser step (so a resumed run needs only the step).

``official``: the GhostFaceNets recipe (spec 3), Keras ``CosineDecayRestarts`` evaluated per batch (first period
``restart_epochs``, periods growing by ``t_mul``, peaks shrinking by ``m_mul``, floor ``lr_min``) with a cool-down
of ``cooldown_epochs`` at ``lr_min`` after each period, as Keras_insightface's ``CosineLrScheduler`` does.
``cosine`` / ``poly``: warm-up then a single cosine or polynomial decay to ``lr_min`` at the end of training.
Every schedule can start with a linear warm-up from ``warmup_lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import OptimSection


@dataclass(frozen=True)
class LRSchedule:
    """``schedule(step)`` -> learning rate of optimiser step ``step`` (0-based) of ``total_steps``."""

    kind: str
    base: float
    lr_min: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int = 0
    warmup_lr: float = 0.0
    restart_epochs: float = 45.0
    t_mul: float = 2.0
    m_mul: float = 0.5
    cooldown_epochs: float = 1.0
    power: float = 2.0

    def __post_init__(self) -> None:
        if self.kind == "official" and not (self.t_mul >= 1 and self.cooldown_epochs >= 0):
            raise ValueError(
                f"restart periods would never end: t_mul must be at least 1 and cooldown_epochs 0 or "
                f"more, got t_mul={self.t_mul}, cooldown_epochs={self.cooldown_epochs}"
            )

    @classmethod
    def from_config(cls, optim: OptimSection, steps_per_epoch: int, total_steps: int) -> LRSchedule:
        return cls(
            optim.schedule,
            optim.lr,
            optim.lr_min,
            steps_per_epoch,
            total_steps,
            round(optim.warmup_epochs * steps_per_epoch),
            optim.warmup_lr,
            optim.restart_epochs,
            optim.restart_t_mul,
            optim.restart_m_mul,
            optim.cooldown_epochs,
            optim.power,
        )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + (self.base - self.warmup_lr) * step / self.warmup_steps
        step -= self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        if self.kind == "constant":
            return self.base
        if self.kind == "cosine":
            return self.lr_min + (self.base - self.lr_min) * 0.5 * (1 + math.cos(math.pi * min(step / span, 1.0)))
        if self.kind == "poly":
            return self.lr_min + (self.base - self.lr_min) * (1 - min(step / span, 1.0)) ** self.power
        if self.kind == "official":
            return self._restarts(step)
        raise ValueError(f"unknown schedule {self.kind!r}")

    def _restarts(self, step: int) -> float:
        alpha = self.lr_min / self.base
        period = self.restart_epochs * self.steps_per_epoch
        cooldown = self.cooldown_epochs * self.steps_per_epoch
        position, restart = float(step), 0
        while position >= period:
            position -= period
            if position < cooldown:
                return self.lr_min
            position -= cooldown
            period *= self.t_mul
            restart += 1
        decayed = 0.5 * self.m_mul**restart * (1 + math.cos(math.pi * position / period))
        return self.base * ((1 - alpha) * decayed + alpha)
