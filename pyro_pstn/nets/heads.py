"""What every localizer's heads share."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..transforms import TransformFamily


@torch.no_grad()
def identity_init(loc: nn.Module, spread: nn.Module | None, layout: str | TransformFamily, spread_init: float) -> None:
    """Start a localizer at the identity for every input: the μ head with zero weights and bias
    θ_id, the spread head (if any) with zero weights and bias ``spread_init``."""
    loc.weight.zero_()
    loc.bias.copy_(layout.identity_theta())
    if spread is not None:
        spread.weight.zero_()
        spread.bias.fill_(spread_init)
