"""Swappable priors: objects passed to a model's constructor, not flags.

Their parameters are buffers, so they follow the model to any device. Calling a prior returns a
Pyro distribution whose event is one θ (or λ) vector; the model's data plate adds the batch.
Write your own by subclassing ``torch.nn.Module`` with a ``forward()`` that returns a
distribution with ``event_shape == (D,)``.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn as nn


class NormalPrior(nn.Module):
    """θ ~ N(loc, diag(scale²)): paper 000 eq. 4 centred at the identity, and paper 000 §4.3 (DA)."""

    def __init__(self, loc: torch.Tensor, scale: float | torch.Tensor):
        super().__init__()
        loc = torch.as_tensor(loc, dtype=torch.float32)
        scale = torch.as_tensor(scale, dtype=torch.float32).expand_as(loc).clone()
        if not (scale > 0).all():
            raise ValueError(f"prior scale must be positive, got {scale.tolist()}")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class GammaPrior(nn.Module):
    """λ_d ~ Gamma(α0, β0) for each of D precisions (paper 001 eq. 6; α0 = β0 = 1 in the paper)."""

    def __init__(self, dim: int, concentration: float = 1.0, rate: float = 1.0):
        super().__init__()
        if concentration <= 0 or rate <= 0:
            raise ValueError(f"Gamma prior needs concentration > 0 and rate > 0, got {concentration}, {rate}")
        self.register_buffer("concentration", torch.full((dim,), float(concentration)))
        self.register_buffer("rate", torch.full((dim,), float(rate)))

    def forward(self) -> dist.Distribution:
        return dist.Gamma(self.concentration, self.rate).to_event(1)
