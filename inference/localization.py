"""How well a localizer recovers known transformations (paper 001 §5.1)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from pyro_pstn.transforms import TransformFamily, get_layout


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """``angle`` in (−π, π]: the signed difference of two angles on the circle."""
    return torch.atan2(torch.sin(angle), torch.cos(angle))


def transformation_errors(theta_true: torch.Tensor, mu: torch.Tensor, layout: str | TransformFamily) -> torch.Tensor:
    """Per image ‖θ_true − μ(x)‖ with angle coordinates compared on the circle (001 eq. 18, "mod π":
    an angle error lies in [0, π]); ``[N, D]`` → ``[N]``."""
    layout = get_layout(layout)
    if theta_true.shape != mu.shape or theta_true.shape[-1] != layout.dim:
        raise ValueError(f"θ_true {tuple(theta_true.shape)} and μ {tuple(mu.shape)} must both be [N, {layout.dim}] "
                         f"({layout.name})")
    diff = theta_true - mu
    angles = torch.tensor([name == "angle" for name in layout.param_names], device=diff.device)
    diff = torch.where(angles, wrap_angle(diff), diff)
    return diff.norm(dim=-1)


@dataclass
class SpreadByError:
    """001 Fig. 4 (bottom right): the posterior spread of images localized worse than the median
    error against those localized better; ``ratio`` > 1 when poorly localized images are less certain."""

    median_error: float
    spread_above: float
    spread_below: float

    @property
    def ratio(self) -> float:
        return self.spread_above / self.spread_below if self.spread_below > 0 else math.inf

    def to_dict(self) -> dict[str, float]:
        return {"median_error": self.median_error, "spread_above": self.spread_above,
                "spread_below": self.spread_below, "ratio": self.ratio}


def spread_by_error(errors: torch.Tensor, spread: torch.Tensor) -> SpreadByError:
    """Mean spread (variance or scale, ``[N]`` or ``[N, D]``, averaged over D) of the images whose error
    is above the median against those at or below it."""
    if spread.dim() == 2:
        spread = spread.mean(-1)
    if errors.shape != spread.shape:
        raise ValueError(f"errors {tuple(errors.shape)} and spreads {tuple(spread.shape)} must match")
    median = errors.median()
    above = errors > median
    return SpreadByError(float(median), float(spread[above].mean()), float(spread[~above].mean()))


def posterior_variance(model: nn.Module, spread: torch.Tensor) -> torch.Tensor:
    """Per coordinate, the variance parameter of q(θ|x) from the localizer's spread head: σ(x)² for the
    Gaussian P-STN; β(x)/α0 for the Gamma P-STN, the Student-t's squared scale (its variance is
    infinite at α0 = 1): what the model's ``theta_variance`` says."""
    return model.theta_variance(spread)
