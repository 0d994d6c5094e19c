"""The papers' MNIST networks, with exactly the authors' sizes (anchors.md §1.3).

All convolutions are 'valid' 5×5, each followed by MaxPool(2) then ReLU.

| network                       | convs      | head                 | parameters |
|-------------------------------|------------|----------------------|-----------:|
| CNN baseline classifier       | 12, 24     | 384 → 52 → 10        | 28,086 |
| STN / P-STN classifier        | 10, 20     | 320 → 50 → 10        | 21,840 |
| STN localizer (similarity)    | 12, 18     | 288 → 4              |  6,886 |
| P-STN localizer (similarity)  | 8, 14      | 224 → 4 (μ), 224 → 4 (β or σ) | 4,822 |

So CNN 28,086; STN 28,726; P-STN 26,662 parameters in all.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..transforms import AffineLayout, apply_flat, get_layout


def conv_features(in_channels: int, channels: tuple[int, int], kernel_size: int = 5) -> nn.Sequential:
    """Conv → MaxPool(2) → ReLU, twice, then flatten (the authors' order)."""
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, kernel_size),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(c1, c2, kernel_size),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
    )


def _num_features(features: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, in_channels, image_size, image_size)).shape[-1]


class Classifier(nn.Module):
    """f(x): images ``[..., C, H, W]`` → class logits ``[..., K]`` (any leading sample dims)."""

    def __init__(
        self,
        channels: tuple[int, int],
        hidden: int,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.features = conv_features(in_channels, channels)
        n = _num_features(self.features, in_channels, image_size)
        self.head = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(lambda images: self.head(self.features(images)), x, event_dim=3)


class Localizer(nn.Module):
    """μ(x) and, optionally, a positive spread head (σ(x) for the Gaussian P-STN, β(x) for Gamma).

    Both heads are identity-initialised for every layout, rotation-only included (the authors'
    code leaves rotation-only heads at PyTorch's random init): the μ head has zero weights and
    bias θ_id, the spread head zero weights and bias ``spread_init``, so at the start
    μ(x) = θ_id and spread(x) = softplus(spread_init) for every image.
    """

    def __init__(
        self,
        layout: str | AffineLayout,
        channels: tuple[int, int],
        spread_head: bool,
        spread_init: float = -5.0,
        in_channels: int = 1,
        image_size: int = 28,
    ):
        super().__init__()
        self.layout = get_layout(layout)
        self.features = conv_features(in_channels, channels)
        n = _num_features(self.features, in_channels, image_size)
        self.loc = nn.Linear(n, self.layout.dim)
        self.spread = nn.Linear(n, self.layout.dim) if spread_head else None
        with torch.no_grad():
            self.loc.weight.zero_()
            self.loc.bias.copy_(self.layout.identity_theta())
            if self.spread is not None:
                self.spread.weight.zero_()
                self.spread.bias.fill_(spread_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.features(x)
        loc = self.loc(h)
        if self.spread is None:
            return loc, None
        return loc, F.softplus(self.spread(h)).clamp_min(1e-8)


def mnist_cnn_classifier(num_classes: int = 10) -> Classifier:
    """The CNN baseline: 28,086 parameters."""
    return Classifier((12, 24), 52, num_classes)


def mnist_stn_classifier(num_classes: int = 10) -> Classifier:
    """The classifier behind the STN and P-STN localizers: 21,840 parameters."""
    return Classifier((10, 20), 50, num_classes)


def mnist_stn_localizer(layout: str | AffineLayout = "similarity") -> Localizer:
    """Deterministic STN localizer: 6,886 parameters for the similarity layout."""
    return Localizer(layout, (12, 18), spread_head=False)


def mnist_pstn_localizer(layout: str | AffineLayout = "similarity", spread_init: float = -5.0) -> Localizer:
    """Probabilistic localizer (μ and spread heads): 4,822 parameters for the similarity layout."""
    return Localizer(layout, (8, 14), spread_head=True, spread_init=spread_init)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
