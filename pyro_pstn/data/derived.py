"""Data sets derived from a base set by seeded, fixed transformations (the same on every load).

* :func:`digit_subset`: some classes of a data set, relabelled 0..k−1 (paper 004's MNIST 0/1/5/6/9);
* :func:`random_affine_copy`: paper 003's "augmented dataset" — rotation ±10°, translation ±4 px
  and scaling ±20 %, each applied independently with probability 0.5 (003 §3.1).
"""
from __future__ import annotations

import math

import torch

from ..transforms import warp
from .types import DataSplits, ImageSet


def random_affine_copy(
    images: torch.Tensor,
    seed: int,
    max_degrees: float = 10.0,
    max_shift_px: float = 4.0,
    max_scale: float = 0.2,
    p: float = 0.5,
    fill: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A transformed copy of ``images`` [N, C, H, W] and the applied θ = (angle, scale, tx, ty).

    Each of rotation (angle ~ U(±max_degrees)), translation (both axes ~ U(±max_shift_px)) and
    scaling (factor ~ U(1 ± max_scale)) happens with probability ``p``, independently, drawn
    from a generator seeded by ``seed``. θ is in the ``similarity`` layout of the *sampling* map
    (output → input points), so a content scale factor s appears as 1/s.
    """
    n, _, height, width = images.shape
    g = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float):
        return low + (high - low) * torch.rand(n, generator=g)

    def happens():
        return torch.rand(n, generator=g) < p

    angle = torch.where(happens(), uniform(-1, 1) * math.radians(max_degrees), torch.zeros(n))
    shifted = happens()
    # one pixel is 2/W in normalised coordinates (align_corners=False); moving content by +t
    # samples from −t
    tx = torch.where(shifted, -uniform(-1, 1) * max_shift_px * 2 / width, torch.zeros(n))
    ty = torch.where(shifted, -uniform(-1, 1) * max_shift_px * 2 / height, torch.zeros(n))
    scale = torch.where(happens(), 1 / uniform(1 - max_scale, 1 + max_scale), torch.ones(n))
    theta = torch.stack([angle, scale, tx, ty], -1)
    out = torch.cat([warp(chunk, theta[i : i + 4096], "similarity", fill=fill)
                     for i, chunk in zip(range(0, n, 4096), images.split(4096))])
    return out, theta


def augmented_set(data: ImageSet, seed: int, **options) -> ImageSet:
    """:func:`random_affine_copy` of an :class:`ImageSet`, labels unchanged."""
    images, _ = random_affine_copy(data.images, seed, **options)
    return ImageSet(images, data.labels)


def digit_subset(data: DataSplits, classes: tuple[int, ...], name: str) -> DataSplits:
    """The examples of ``classes`` only, relabelled 0..k−1 in the order given."""
    relabel = torch.full((data.num_classes,), -1, dtype=torch.long)
    relabel[list(classes)] = torch.arange(len(classes))

    def keep(split: ImageSet) -> ImageSet:
        mask = torch.isin(split.labels, torch.tensor(classes))
        return ImageSet(split.images[mask], relabel[split.labels[mask]])

    return DataSplits(name, data.fold, keep(data.train), keep(data.val), keep(data.test), len(classes), data.spec.mean,
                      data.spec.std, f"{data.name} classes {classes}, relabelled 0–{len(classes) - 1}")
