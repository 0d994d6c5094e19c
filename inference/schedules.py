"""KL weight: the authors' per-dimension w, Pyro's summed convention, and annealing schedules."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyro_pstn.models.base import kl_weight_per_dimension

if TYPE_CHECKING:
    from .engine import Trainer

ANNEALING = ("constant", "linear", "cyclic")


#: The authors' per-dimension KL weight on Pyro's scale; written once, beside the models.
pyro_kl_weight = kl_weight_per_dimension


@dataclass(frozen=True)
class AnnealingSchedule:
    """Multiplier in [0, 1] on the KL weight at a given optimisation step.

    * ``constant``: 1 throughout;
    * ``linear``: warm-up from 0 to 1 over ``warmup_steps``, then 1 (Bowman et al. 2016);
    * ``cyclic``: ``cycles`` cycles over the run, each rising linearly from 0 to 1 during the
      first ``ratio`` of the cycle and held at 1 for the rest (Fu et al. 2019).
    """

    kind: str = "constant"
    total_steps: int = 1
    warmup_steps: int = 0
    cycles: int = 4
    ratio: float = 0.5

    def __post_init__(self):
        if self.kind not in ANNEALING:
            raise ValueError(f"unknown annealing schedule {self.kind!r}; valid: {', '.join(ANNEALING)}")

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            return 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)
        period = max(1, math.ceil(self.total_steps / self.cycles))
        phase = (step % period) / period
        return min(1.0, phase / self.ratio)


@dataclass(frozen=True)
class TemperatureSchedule:
    """Gumbel-softmax temperature τ_t = max(τ_min, τ_0 · exp(−r t)) at step t (Jang et al. 2017 §4).

    A step hook for :class:`~inference.engine.Trainer`: called with the trainer before each
    step, it gives the loss's ``temperature`` argument. It depends on the step count only, so a
    resumed run continues the same schedule.
    """

    start: float = 1.0
    end: float = 0.5
    rate: float = 1e-4

    def __post_init__(self):
        if not 0 < self.end <= self.start or self.rate < 0:
            raise ValueError(f"need 0 < end ≤ start and rate ≥ 0, got start={self.start}, end={self.end}, rate={self.rate}")

    def value(self, step: int) -> float:
        return max(self.end, self.start * math.exp(-self.rate * step))

    def __call__(self, trainer: Trainer) -> dict:
        return {"temperature": self.value(trainer.step)}
