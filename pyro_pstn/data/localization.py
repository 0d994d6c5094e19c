"""Data sets with ground-truth transformations, for localization (paper 001 §5.1).

* ``rotated_mnist``: every MNIST image rotated by θ_true ~ U(−π, π) (001 §5.1.1);
* ``placed_fashion_mnist``: every Fashion-MNIST image drawn at half the side of a 96 × 96 black
  canvas, at a uniform random position (001 §5.1.2: "downscaling by 50 %", θ_true = [0, 0.5, tx, ty]).

θ_true is the transformation a localizer should predict: in the layout of the data set
(``rotation``; ``similarity``), it maps the transformed image back to the original,
``warp(x, θ_true) ≈ original`` (for the canvas, a 28 × 28 output: ``size=(28, 28)``). Pixels are raw
intensities in [0, 1] with a black (0) background, for the frozen classifier and the warps alike
(the authors normalised the canvases with MNIST statistics while their classifier was pretrained
unnormalised, anchors.md §1.7, §1.9).

Unlike the authors' loaders, which redraw angles and positions on every access, both sets are
generated once from a seed (one per split), so every evaluation sees the same test set. Training
and validation are the 50,000 / 10,000 split of the official training set (seed 42), test the
official 10,000 test images.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ..transforms import get_layout, warp
from .datasets import load_mnist_family
from .types import DataError, ImageSet, LoadOptions

#: Canvas side of ``placed_fashion_mnist`` and the part of it an item fills (001 §5.1.2).
CANVAS = 96
ITEM_SCALE = 0.5
#: name → (base data set, transformation layout of θ_true)
LOCALIZATION_SETS = {"rotated_mnist": ("mnist", "rotation"), "placed_fashion_mnist": ("fashion_mnist", "similarity")}
#: One generator seed per split, so train, validation and test are drawn independently.
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class LocalizationSet(ImageSet):
    """Images and labels with the ground truth θ_true ``[N, D]`` of each image."""

    theta: torch.Tensor  # [N, D] in the data set's layout

    def to(self, device: torch.device | str) -> "LocalizationSet":
        return LocalizationSet(self.images.to(device), self.labels.to(device), self.theta.to(device))


@dataclass
class LocalizationSplits:
    name: str
    layout: str  # the layout of θ_true and of the localizer
    train: LocalizationSet
    val: LocalizationSet
    test: LocalizationSet
    num_classes: int = 10
    output_size: tuple[int, int] = (28, 28)  # what the frozen classifier sees


def rotate(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image rotated by −θ_true, θ_true ~ U(−π, π) from ``seed``: ``warp(x, θ_true)`` undoes it."""
    g = torch.Generator().manual_seed(seed)
    theta = (torch.rand(len(images), 1, generator=g) * 2 - 1) * math.pi
    out = torch.cat([warp(chunk, -t, "rotation") for chunk, t in zip(images.split(4096), theta.split(4096))])
    return out, theta


def place(images: torch.Tensor, seed: int, canvas: int = CANVAS, scale: float = ITEM_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image drawn on a black ``canvas`` × ``canvas`` square, filling ``scale`` of its side, at
    a uniform position that keeps it whole: θ_true = [0, scale, tx, ty], tx, ty ~ U(−(1 − scale), 1 − scale)."""
    g = torch.Generator().manual_seed(seed)
    shift = (torch.rand(len(images), 2, generator=g) * 2 - 1) * (1 - scale)
    theta = torch.cat([torch.zeros(len(images), 1), torch.full((len(images), 1), scale), shift], -1)
    layout = get_layout("similarity")
    out = torch.cat([warp(chunk, t, layout, inverse=True, size=(canvas, canvas))
                     for chunk, t in zip(images.split(2048), theta.split(2048))])
    return out, theta


def load_localization(name: str, data_root: str | os.PathLike | None = None, val_size: int | None = None,
                      test_size: int | None = None,
                      train_size: int | None = None, download: bool = False) -> LocalizationSplits:
    """``rotated_mnist`` or ``placed_fashion_mnist`` (see the module docstring); ``*_size`` keep the
    first that many images of a split (smoke runs)."""
    if name not in LOCALIZATION_SETS:
        raise DataError(f"unknown localization data set {name!r}; valid: {', '.join(LOCALIZATION_SETS)}")
    base, layout = LOCALIZATION_SETS[name]
    data = load_mnist_family(base, LoadOptions(data_root, 0, val_size, test_size, download, normalize=False))
    make = rotate if name == "rotated_mnist" else place
    splits = {}
    for split, size in (("train", train_size), ("val", None), ("test", None)):
        source = getattr(data, split)
        images, labels = source.images[:size], source.labels[:size]
        warped, theta = make(images, SPLIT_SEEDS[split])
        splits[split] = LocalizationSet(warped, labels, theta)
    return LocalizationSplits(name, layout, **splits)
