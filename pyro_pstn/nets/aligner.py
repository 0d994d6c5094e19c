"""A deterministic spatial transformer that puts images back in a canonical pose (paper 003 §3.2).

003 trains it on its own, before the VAEs: input the augmented image, target the original,
mean-squared error (Jaderberg et al. 2015; the PyTorch STN tutorial's network in 003).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..transforms import get_layout, warp
from .mnist import mnist_stn_localizer


class Aligner(nn.Module):
    """x ↦ T_θ(x)(x) with θ = localizer(x), starting at the identity."""

    def __init__(self, layout: str = "similarity", localizer: nn.Module | None = None, fill: float = 0.0):
        super().__init__()
        self.layout = get_layout(layout)
        self.localizer = localizer if localizer is not None else mnist_stn_localizer(self.layout)
        self.fill = float(fill)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta, _ = self.localizer(x)
        return warp(x, theta, self.layout, fill=self.fill)
