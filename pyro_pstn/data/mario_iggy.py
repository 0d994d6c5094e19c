"""The Mario-Iggy rotation data set (Augerino; paper 004 §4, anchors.md §2.7), generated here.

Two RGB sprites (``mario_iggy/images.npz`` in the data root) × two orientations = 4 classes:
Mario upright (0), Mario inverted (1), Iggy upright (2), Iggy inverted (3). Each image is its
sprite rotated by an angle drawn uniformly in ±``rotation_range`` around 0 (upright) or 180°
(inverted); with ``num_modes`` = k the class is further rotated by one of k offsets j·360°/k
(the 3-mode set of 004 Fig. 4 uses k = 3 and ±30°). Pixels stay in [0, 1] with a black
background. The angle of every image is kept, so learned rotation ranges can be compared with
the data's own.

Training, validation and test images come from separate seeded generators (``seed``,
``seed + 1``, ``seed + 2``): the test set is the same whatever the training size.
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from ..transforms import warp
from .types import DataError, DataSplits, ImageSet, resolve_data_root

MARIO_IGGY_CLASSES = ("mario", "mario_inverted", "iggy", "iggy_inverted")
SPRITES_FILE = "mario_iggy/images.npz"


@dataclass
class RotatedImageSet(ImageSet):
    """Images with the rotation that made each of them: ``images = warp(canonical, angles, "rotation")``
    (radians, the inverted classes' 180° included)."""

    angles: torch.Tensor | None = None


def load_sprites(data_root: str | os.PathLike | None = None) -> torch.Tensor:
    """The two sprites as a float32 tensor [2, 3, 32, 32] (Mario, Iggy) in [0, 1]."""
    path = resolve_data_root(data_root) / SPRITES_FILE
    if not path.exists():
        raise DataError(f"{path} does not exist: point --data-root or $PYRO_PSTN_DATA at the folder holding "
                        f"{SPRITES_FILE} (in this project: ../shared/data)")
    try:
        with np.load(path) as archive:
            sprites = [np.asarray(archive[name], dtype=np.float32) for name in ("mario", "iggy")]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not the Mario-Iggy sprite archive (arrays 'mario' and 'iggy'): {err}") from None
    for name, sprite in zip(("mario", "iggy"), sprites):
        if sprite.shape != (1, 3, 32, 32) or not np.isfinite(sprite).all() or sprite.min() < 0 or sprite.max() > 1:
            raise DataError(f"{path}: sprite {name!r} should be a (1, 3, 32, 32) array in [0, 1], "
                            f"got shape {sprite.shape}; re-fetch the file")
    return torch.from_numpy(np.concatenate(sprites))


def rotated_sprites(sprites: torch.Tensor, size: int, rotation_range: float, num_modes: int,
                    generator: torch.Generator) -> RotatedImageSet:
    """``size`` images, classes balanced and shuffled, rotated as the module docstring says."""
    labels = torch.arange(size) % len(MARIO_IGGY_CLASSES)
    labels = labels[torch.randperm(size, generator=generator)]
    jitter = (2 * torch.rand(size, generator=generator) - 1) * math.radians(rotation_range)
    mode = torch.randint(num_modes, (size,), generator=generator) * (2 * math.pi / num_modes)
    angles = jitter + mode + math.pi * (labels % 2)
    angles = torch.remainder(angles + math.pi, 2 * math.pi) - math.pi  # in [−π, π)
    images = warp(sprites[labels // 2], angles[:, None], "rotation")
    return RotatedImageSet(images.clamp(0, 1), labels, angles)


def mario_iggy(
    data_root: str | os.PathLike | None = None,
    rotation_range: float = 90.0,
    num_modes: int = 1,
    train_size: int = 12000,
    val_size: int = 600,
    test_size: int = 600,
    seed: int = 88,
) -> DataSplits:
    """The Mario-Iggy splits: ``rotation_range`` in degrees (45, 90; 30 with ``num_modes=3``).

    Sizes follow the authors' ``train_mario.py`` (12,000 train / 600 test); the validation set
    is ours. The ImageSets are :class:`RotatedImageSet` with the generating angles.
    """
    if not 0 <= rotation_range <= 180:
        raise ValueError(f"rotation_range is in degrees within [0, 180], got {rotation_range}")
    if num_modes < 1 or min(train_size, val_size, test_size) < 1:
        raise ValueError(f"num_modes and the split sizes must be at least 1, got {num_modes}, "
                         f"{train_size}, {val_size}, {test_size}")
    sprites = load_sprites(data_root)
    splits = [
        rotated_sprites(sprites, n, rotation_range, num_modes, torch.Generator().manual_seed(seed + offset))
        for offset, n in enumerate((train_size, val_size, test_size))
    ]
    name = f"mario_iggy{rotation_range:g}" + (f"x{num_modes}modes" if num_modes > 1 else "")
    return DataSplits(name, None, *splits, num_classes=len(MARIO_IGGY_CLASSES), mean=0.0, std=1.0,
                      source=f"generated from {SPRITES_FILE} (seed {seed})")
