"""The papers' MNIST networks, with exactly the authors' sizes (anchors.md §1.3).

All convolutions are 'valid' 5×5, each followed by MaxPool(2) then ReLU.

| network                       | convs      | head                 | parameters |
|-------------------------------|------------|----------------------|-----------:|
| CNN baseline classifier       | 12, 24     | 384 → 52 → 10        | 28,086 |
| STN / P-STN classifier        | 10, 20     | 320 → 50 → 10        | 21,840 |
| STN localizer (similarity)    | 12, 18     | 288 → 4              |  6,886 |
| P-STN localizer (similarity)  | 8, 14      | 224 → 4 (μ), 224 → 4 (β or σ) | 4,822 |

So CNN 28,086; STN 28,726; P-STN 26,662 parameters in all.

Each network also takes ``members=R``: R independent copies in one module, for stacked runs
(:mod:`.members`); ``member(r)`` gives member r back as an ordinary network.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..transforms import AffineLayout, apply_flat, get_layout
from .heads import identity_init
from .members import Stackable, apply_members, conv2d, linear

#: Largest side of the feature map that the heads of spec-sized networks see: 4 × 4, what the
#: papers' networks see on 28 × 28 images, so larger images keep the papers' head sizes.
MAX_FEATURE_SIDE = 4


def _feature_side(size: int, kernel_size: int) -> int:
    """The side of the feature map after two valid convolutions and two poolings by 2."""
    return ((size - kernel_size + 1) // 2 - kernel_size + 1) // 2


def conv_features(in_channels: int, channels: tuple[int, int], kernel_size: int = 5,
                  members: int | None = None, pool_to: tuple[int, int] | None = None) -> nn.Sequential:
    """Conv → MaxPool(2) → ReLU, twice, then flatten (the authors' order); R of them with ``members``.
    ``pool_to`` adds an adaptive max-pool to that feature-map size before flattening (larger images)."""
    c1, c2 = channels
    pool = [nn.AdaptiveMaxPool2d(pool_to)] if pool_to is not None else []
    return nn.Sequential(
        conv2d(in_channels, c1, kernel_size, members),
        nn.MaxPool2d(2),
        nn.ReLU(),
        conv2d(c1, c2, kernel_size, members),
        nn.MaxPool2d(2),
        nn.ReLU(),
        *pool,
        nn.Flatten(),
    )


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def feature_pool(image_size: int | tuple[int, int], kernel_size: int = 5) -> tuple[int, int] | None:
    """The adaptive pool that caps the feature map at :data:`MAX_FEATURE_SIDE` (None where it is
    that small already, as on 28 × 28 images); a ValueError for images too small for two convolutions."""
    sides = [_feature_side(s, kernel_size) for s in _size(image_size)]
    if min(sides) < 1:
        least = next(n for n in range(kernel_size, 100) if _feature_side(n, kernel_size) >= 1)
        raise ValueError(f"images of {'×'.join(map(str, _size(image_size)))} pixels are too small for the built-in "
                         f"networks (two {kernel_size}×{kernel_size} convolutions need at least {least}×{least}); "
                         "pass a classifier and localizer of your own")
    if max(sides) <= MAX_FEATURE_SIDE:
        return None
    return tuple(min(s, MAX_FEATURE_SIDE) for s in sides)


def _num_features(channels: tuple[int, int], in_channels: int, image_size: int | tuple[int, int], kernel_size: int = 5,
                  pool_to: int | None = None) -> int:
    with torch.no_grad():
        features = conv_features(in_channels, channels, kernel_size, pool_to=pool_to)
        return features(torch.zeros(1, in_channels, *_size(image_size))).shape[-1]


class Classifier(Stackable, nn.Module):
    """f(x): images ``[..., C, H, W]`` → class logits ``[..., K]`` (any leading sample dims);
    with ``members=R``, images ``[..., R, B, C, H, W]`` → ``[..., R, B, K]``."""

    def __init__(
        self,
        channels: tuple[int, int],
        hidden: int,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        dropout: float = 0.5,
        members: int | None = None,
        pool_to: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.init_args = dict(channels=channels, hidden=hidden, num_classes=num_classes, in_channels=in_channels,
                              image_size=image_size, dropout=dropout, members=members, pool_to=pool_to)
        self.features = conv_features(in_channels, channels, members=members, pool_to=pool_to)
        n = _num_features(channels, in_channels, image_size, pool_to=pool_to)
        self.head = nn.Sequential(linear(n, hidden, members), nn.ReLU(), nn.Dropout(dropout),
                                  linear(hidden, num_classes, members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members is not None:
            return apply_members(self.features, self.head, x, self.members)
        return apply_flat(lambda images: self.head(self.features(images)), x, event_dim=3)


class Localizer(Stackable, nn.Module):
    """μ(x) and, optionally, a positive spread head (σ(x) for the Gaussian P-STN, β(x) for Gamma).

    Images ``[B, C, H, W]`` → heads ``[B, D]``; with ``members=R``, ``[R, B, C, H, W]`` → ``[R, B, D]``.

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
        image_size: int | tuple[int, int] = 28,
        members: int | None = None,
        kernel_size: int = 5,
        head_hidden: int | None = None,
        pool_to: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.init_args = dict(layout=layout, channels=channels, spread_head=spread_head, spread_init=spread_init,
                              in_channels=in_channels, image_size=image_size, members=members,
                              kernel_size=kernel_size, head_hidden=head_hidden, pool_to=pool_to)
        self.layout = get_layout(layout)
        self.features = conv_features(in_channels, channels, kernel_size, members=members, pool_to=pool_to)
        n = _num_features(channels, in_channels, image_size, kernel_size, pool_to=pool_to)

        def head():  # Linear, or the authors' larger localizers' Linear → ReLU → Linear
            if head_hidden is None:
                return linear(n, self.layout.dim, members)
            return nn.Sequential(linear(n, head_hidden, members), nn.ReLU(), linear(head_hidden, self.layout.dim, members))

        self.loc = head()
        self.spread = head() if spread_head else None
        last = (lambda m: m) if head_hidden is None else (lambda m: None if m is None else m[-1])
        identity_init(last(self.loc), last(self.spread), self.layout, spread_init)

    def _heads(self, h: torch.Tensor) -> torch.Tensor:
        """Both heads side by side, ``[..., D]`` or ``[..., 2D]`` (one ``apply_members`` call for both)."""
        return self.loc(h) if self.spread is None else torch.cat([self.loc(h), self.spread(h)], -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.members is None:
            h = self.features(x)
            loc, spread = self.loc(h), None if self.spread is None else self.spread(h)
        else:
            heads = apply_members(self.features, self._heads, x, self.members)
            loc, spread = (heads, None) if self.spread is None else heads.split(self.layout.dim, -1)
        return loc, None if spread is None else F.softplus(spread).clamp_min(1e-8)


def _image_args(in_channels: int, image_size: int | tuple[int, int]) -> dict:
    """The input arguments of a network for ``in_channels`` × ``image_size`` images (sized from a
    data spec): any channels, any side from 16 up, heads on at most a 4 × 4 feature map."""
    return dict(in_channels=in_channels, image_size=_size(image_size), pool_to=feature_pool(image_size))


def mnist_cnn_classifier(num_classes: int = 10, in_channels: int = 1, image_size: int | tuple[int, int] = 28) -> Classifier:
    """The CNN baseline: 28,086 parameters on 1 × 28 × 28 images with 10 classes."""
    return Classifier((12, 24), 52, num_classes, **_image_args(in_channels, image_size))


def mnist_stn_classifier(num_classes: int = 10, in_channels: int = 1, image_size: int | tuple[int, int] = 28) -> Classifier:
    """The classifier behind the STN and P-STN localizers: 21,840 parameters (1 × 28 × 28, 10 classes)."""
    return Classifier((10, 20), 50, num_classes, **_image_args(in_channels, image_size))


def mnist_stn_localizer(layout: str | AffineLayout = "similarity", in_channels: int = 1,
                        image_size: int | tuple[int, int] = 28) -> Localizer:
    """Deterministic STN localizer: 6,886 parameters for the similarity layout (1 × 28 × 28)."""
    return Localizer(layout, (12, 18), spread_head=False, **_image_args(in_channels, image_size))


def mnist_pstn_localizer(layout: str | AffineLayout = "similarity", spread_init: float = -5.0, in_channels: int = 1,
                         image_size: int | tuple[int, int] = 28) -> Localizer:
    """Probabilistic localizer (μ and spread heads): 4,822 parameters for the similarity layout (1 × 28 × 28)."""
    return Localizer(layout, (8, 14), spread_head=True, spread_init=spread_init, **_image_args(in_channels, image_size))


def large_localizer(layout: str | AffineLayout = "rotation", probabilistic: bool = True, spread_init: float = -3.0,
                    canvas: int | None = None) -> Localizer:
    """The authors' larger localizers for localization with a frozen classifier (anchors.md §1.3):
    ``large_loc`` of rotated MNIST (P-STN 28/53 filters, 71,883 parameters with one rotation angle;
    STN 32/64 filters) and, with ``canvas=96``, the 7 × 7 localizer of the 96 × 96 random-placement
    canvases (P-STN 11/21 filters, hidden 12, 193,962 parameters for the similarity layout; STN
    16/31, hidden 15). Heads are Linear → ReLU → Linear."""
    if canvas is None:
        channels, hidden, kernel, size = ((28, 53) if probabilistic else (32, 64)), 20, 5, 28
    else:
        channels, hidden, kernel, size = ((11, 21) if probabilistic else (16, 31)), (12 if probabilistic else 15), 7, canvas
    return Localizer(layout, channels, spread_head=probabilistic, spread_init=spread_init, image_size=size,
                     kernel_size=kernel, head_hidden=hidden)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
