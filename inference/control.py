"""Holding the entropy of a transformation distribution at a target (paper 004 A.3.3).

:class:`PIDController` is a small stateful object: each call takes the measured entropy and
returns the entropy weight α for the next step,

    H̄_t = EMA_β(H_t)                                   (input smoothing)
    e_t = H* − H̄_t,   I_t = I_{t−1} + e_t,   Δ_t = e_t − e_{t−1}
    α_t = EMA_β(clip(k_p e_t + k_i I_t + k_d Δ_t, α_min, α_max)), clipped again

with the integral starting at ``integral_init`` (the authors' 10.0) and β = 0.9 for both
moving averages (anchors.md §2.5). An entropy below the target raises α, which raises the
entropy bonus. Unlike the authors' controller, the integral is clamped so that k_i I stays in
[α_min, α_max] (anti-windup): while the output saturates, the integral does not keep growing and
overshoot later. :class:`EntropyController` is the step hook that connects it to the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Trainer


@dataclass
class PIDController:
    target: float
    kp: float = 1e-2
    ki: float = 1e-2
    kd: float = 0.0
    output_min: float = 1e-4
    output_max: float = 1.0
    integral_init: float = 10.0
    smoothing: float = 0.9
    anti_windup: bool = True
    integral: float = field(init=False)
    smoothed_input: float | None = field(init=False, default=None)
    smoothed_output: float | None = field(init=False, default=None)
    last_error: float | None = field(init=False, default=None)

    def __post_init__(self):
        if not 0 <= self.output_min <= self.output_max:
            raise ValueError(f"need 0 ≤ output_min ≤ output_max, got {self.output_min}, {self.output_max}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must lie in [0, 1), got {self.smoothing}")
        self.integral = float(self.integral_init)

    def _ema(self, previous: float | None, value: float) -> float:
        return value if previous is None else self.smoothing * previous + (1 - self.smoothing) * value

    def _clip(self, value: float) -> float:
        return min(max(value, self.output_min), self.output_max)

    def __call__(self, measurement: float) -> float:
        """The next output for a new measurement (e.g. the entropy of the last batch, nats)."""
        if measurement != measurement:  # NaN
            raise ValueError("the PID controller got a NaN measurement: the flow's log-density diverged")
        self.smoothed_input = self._ema(self.smoothed_input, float(measurement))
        error = self.target - self.smoothed_input
        self.integral += error
        if self.anti_windup and self.ki > 0:
            self.integral = min(max(self.integral, self.output_min / self.ki), self.output_max / self.ki)
        derivative = 0.0 if self.last_error is None else error - self.last_error
        self.last_error = error
        raw = self._clip(self.kp * error + self.ki * self.integral + self.kd * derivative)
        self.smoothed_output = self._clip(self._ema(self.smoothed_output, raw))
        return self.smoothed_output

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("integral", "smoothed_input", "smoothed_output", "last_error")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class EntropyController:
    """A :class:`~inference.engine.Trainer` step hook: with a ``pid``, chooses the entropy weight α
    (the loss's ``kl_weight`` argument) from the entropy of the previous step, and logs every step
    (step, α used at this step, entropy measured at the previous step; ``None`` before the first).

    The model must expose ``last_entropy`` (``flow_pstn`` does). Without a ``pid`` α stays what
    the trainer set (the config's ``kl_weight`` times the annealing factor).
    """

    pid: PIDController | None = None
    log: list[tuple[int, float, float | None]] = field(default_factory=list)

    def __call__(self, trainer: Trainer) -> dict:
        entropy = None if trainer.model.last_entropy is None else float(trainer.model.last_entropy)
        alpha = trainer.loss_args["kl_weight"]
        if self.pid is not None and entropy is not None:
            alpha = self.pid(entropy)
        self.log.append((trainer.step, float(alpha), entropy))
        return {"kl_weight": alpha}

    def state_dict(self) -> dict:
        return {"log": list(self.log), "pid": self.pid.state_dict() if self.pid is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.log = [tuple(row) for row in state["log"]]
        if self.pid is not None and state["pid"] is not None:
            self.pid.load_state_dict(state["pid"])
