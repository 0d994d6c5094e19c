"""Dense encoders, decoders and heads of the pose-latent VAEs (paper 002, appendix A).

"Two hidden layers of 256 hidden units with rectified linear units", a single 128-unit layer
for the DT-VAE's localization network. Every module accepts any number of leading sample
dimensions (``[*S, B, ...]``), flattened once by :func:`~pyro_pstn.transforms.apply_flat`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..transforms import apply_flat


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear → ReLU between each pair of ``sizes`` (ReLU after the last layer too)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class DenseTrunk(nn.Module):
    """Images ``[*S, B, C, H, W]`` → features ``[*S, B, hidden[-1]]``."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28), hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.out_features = hidden[-1]
        self.net = nn.Sequential(nn.Flatten(), mlp([math.prod(image_shape), *hidden]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(self.net, x, event_dim=3)


class GaussianHead(nn.Module):
    """Features → (loc, scale) of a diagonal Gaussian, or the raw pair of a relative pose guide.

    ``zero_init`` zeroes the last layer's weights, so the head starts at (bias_loc, softplus(bias_scale))
    whatever the input: pose heads start at the prior (and so at the identity transformation).
    ``scale_bias`` is the initial bias of the scale output (before the softplus).
    """

    def __init__(self, in_features: int, dim: int, zero_init: bool = False, scale_bias: float = 0.0):
        super().__init__()
        self.loc = nn.Linear(in_features, dim)
        self.scale = nn.Linear(in_features, dim)
        nn.init.constant_(self.scale.bias, scale_bias)
        if zero_init:
            for layer in (self.loc, self.scale):
                nn.init.zeros_(layer.weight)
            nn.init.zeros_(self.loc.bias)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the paper clips the scale from below (1e-6); softplus + floor keeps it positive and smooth
        return self.loc(h), F.softplus(self.scale(h)) + 1e-6


class DenseDecoder(nn.Module):
    """Codes ``[*S, B, D]`` → Bernoulli logits ``[*S, B, C, H, W]``."""

    def __init__(self, in_features: int, image_shape: tuple[int, int, int] = (1, 28, 28), hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Sequential(mlp([in_features, *hidden]), nn.Linear(hidden[-1], math.prod(image_shape)))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return apply_flat(self.net, code, event_dim=1).unflatten(-1, self.image_shape)


class MLPClassifier(nn.Module):
    """Paper 001 §5.4's classifiers of growing depth: ``depth`` blocks of [Linear, ReLU, Dropout] and a
    linear layer to the class logits. Images ``[*S, B, C, H, W]`` → logits ``[*S, B, K]``. The width
    and dropout are our choice (001 and its scripts give none): 128 units, p = 0.5 as in the CNNs."""

    def __init__(self, depth: int, width: int = 128, num_classes: int = 10,
                 image_shape: tuple[int, int, int] = (1, 28, 28), dropout: float = 0.5):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in in [math.prod(image_shape)] + [width] * (depth - 1):
            layers += [nn.Linear(fan_in, width), nn.ReLU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers, nn.Linear(width, num_classes))
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_flat(self.net, x, event_dim=3)
