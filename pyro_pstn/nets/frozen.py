"""A pretrained network used as it is: no gradients to its weights, always in eval mode."""
from __future__ import annotations

import torch
import torch.nn as nn


class Frozen(nn.Module):
    """Wraps ``net``: its parameters get no gradients (the optimiser skips them) and ``train()`` leaves
    it in eval mode (no dropout, fixed batch-norm statistics), so only the modules around it learn —
    paper 001 §5.1's localizers in front of a frozen classifier. Gradients still flow *through* it."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "Frozen":
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.net(*args, **kwargs)
