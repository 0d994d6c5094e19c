"""Augerino's 5-layer CNN, used by paper 004 as classifier and as pose embedder (A.3.4).

Four 3×3 convolutions of widths c, 2c, 4c, 8c with ReLU (max-pooling by 2 after the second,
third and fourth), a global max-pool and a linear layer: anchors.md §2.4 gives the authors'
sizes, 389,444 parameters for the Mario-Iggy classifier (c = 32, 4 classes, RGB) and 26,608 for
the pose embedder (c = 8, a 32-d embedding). No batch norm, as in flow_inv. The global max-pool
replaces the authors' fixed ``MaxPool2d(4)``, so 28×28 MNIST works without padding to 32×32.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..transforms import apply_flat


class SimpleConv(nn.Module):
    """Images ``[..., C, H, W]`` → ``[..., outputs]`` (logits, or a pose embedding)."""

    def __init__(self, in_channels: int = 3, outputs: int = 10, width: int = 32):
        super().__init__()
        c = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4 * c, 8 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8 * c, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(lambda images: self.head(self.features(images)), x, event_dim=3)
