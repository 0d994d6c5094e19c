"""The authors' UCR networks for univariate series (anchors.md §1.3), on ``[..., C, L]`` signals.

Each convolution is Conv1d ('same' padding) → BatchNorm → ReLU, and the features are averaged
over time (global average pooling), so one network takes series of any length.

| network                                  | convolutions (kernels 8, 8, 5, 5, 3) | head                        | parameters (14 classes, θ ∈ R⁹) |
|------------------------------------------|--------------------------------------|-----------------------------|---------:|
| CNN baseline classifier (FCN-like)       | 164, 256, 256, 256, 256               | Dropout(0.25), 256 → C      | 1,196,314 |
| STN / P-STN classifier                   | 196, 256, 256, 256, 64                | Dropout(0.25), 64 → C       | 1,111,482 |
| localizer (kernels 8, 5, 3)              | 64, 164, 64                           | Dropout(0.5), 64 → θ (μ), 64 → θ (β or σ) | 86,526 (STN: 85,941) |
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..transforms import TransformFamily, apply_flat, get_layout
from .heads import identity_init

#: The authors' kernel sizes of the classifier's five convolutions (their dict's four entries map
#: onto five convolutions: the second reuses the first's 8).
CLASSIFIER_KERNELS = (8, 8, 5, 5, 3)
LOCALIZER_CHANNELS, LOCALIZER_KERNELS = (64, 164, 64), (8, 5, 3)


def conv1d_features(in_channels: int, channels: tuple[int, ...], kernels: tuple[int, ...]) -> nn.Sequential:
    """Conv1d → BatchNorm → ReLU per layer, then the mean over time: ``[N, C, L]`` → ``[N, channels[-1]]``."""
    layers, c = [], in_channels
    for out, k in zip(channels, kernels):
        same = nn.ConstantPad1d(((k - 1) // 2, k // 2), 0.0)  # 'same' padding, also for even kernels
        layers += [same, nn.Conv1d(c, out, k), nn.BatchNorm1d(out), nn.ReLU()]
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten())


class SeriesClassifier(nn.Module):
    """f(x): signals ``[..., C, L]`` → class logits ``[..., K]`` (any leading sample dims)."""

    def __init__(self, channels: tuple[int, ...], num_classes: int, in_channels: int = 1, dropout: float = 0.25):
        super().__init__()
        self.features = conv1d_features(in_channels, channels, CLASSIFIER_KERNELS)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(lambda s: self.head(self.features(s)), x, event_dim=2)


class SeriesLocalizer(nn.Module):
    """μ(x) and, optionally, a positive spread head, as :class:`~pyro_pstn.nets.mnist.Localizer`
    for signals; identity-initialised (μ head: zero weights, bias θ_id; spread head: zero weights,
    bias ``spread_init``)."""

    def __init__(self, layout: str | TransformFamily, spread_head: bool, spread_init: float = -5.0, in_channels: int = 1,
                 dropout: float = 0.5):
        super().__init__()
        self.layout = get_layout(layout)
        self.features = nn.Sequential(conv1d_features(in_channels, LOCALIZER_CHANNELS, LOCALIZER_KERNELS),
                                      nn.Dropout(dropout))
        n = LOCALIZER_CHANNELS[-1]
        self.loc = nn.Linear(n, self.layout.dim)
        self.spread = nn.Linear(n, self.layout.dim) if spread_head else None
        identity_init(self.loc, self.spread, self.layout, spread_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = apply_flat(self.features, x, event_dim=2)
        spread = None if self.spread is None else F.softplus(self.spread(h)).clamp_min(1e-8)
        return self.loc(h), spread


def ucr_classifier(num_classes: int, baseline: bool = False, in_channels: int = 1) -> SeriesClassifier:
    """The FCN-like classifier: the CNN baseline's (``baseline=True``) or the STN / P-STN's; any
    length, any number of channels."""
    return SeriesClassifier((164, 256, 256, 256, 256) if baseline else (196, 256, 256, 256, 64), num_classes,
                            in_channels=in_channels)


def ucr_localizer(layout: str | TransformFamily = "cpab1d", spread_head: bool = True, spread_init: float = -5.0,
                  in_channels: int = 1) -> SeriesLocalizer:
    return SeriesLocalizer(layout, spread_head, spread_init, in_channels=in_channels)
