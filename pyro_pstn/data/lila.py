"""The subset protocol of LILA (Immer et al., NeurIPS 2022; tychovdo/lila) and of the invariant
deep-kernel GP (polaschwoebel/InvDKGP), which the P-STN authors' last scripts moved to.

``lila/<set>/<N>`` names a random subset of N training images of a transformed MNIST or
Fashion-MNIST, with the whole transformed test set; its ``fold`` is LILA's seed. As LILA's
``datasets.py`` and ``classification_image.py`` make them:

* every image of a split is transformed once, by a draw from a generator seeded with 1 (training
  split) or 0 (test split), by bilinear resampling of the raw 0–255 pixels with zero padding, the
  result truncated back to whole intensities;
* ``<base>_r90`` / ``<base>_r180``: rotation by U(±90°) / U(±180°) (``align_corners=False``);
  ``<base>`` alone is the same resampling at 0°;
* ``translated_<base>``: a shift by U(±8 px) along each axis (8 / 14 of the half-width);
  ``scaled_<base>``: a zoom by exp(U(±log 2)), so ×0.5–×2 (both ``align_corners=True``);
* the subset: the first N of a permutation of the 60,000 training images drawn under ``seed``;
  LILA's scripts use seeds 1, 2 and 3 and N = 312, 1,250, 5,000, 20,000 and all 60,000.

Here the validation split is the next ``val_size`` images of that permutation (LILA has none, so
N = 60,000 is not offered), and the images are normalised with the base set's mean and std like
every MNIST set of the library (the fill value is the background, 0 before normalisation).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import BASE_DATASETS, load_idx_pair
from .types import DataError, DataSplits, ImageSet, LoadOptions

LILA_PREFIX = "lila/"
#: LILA's base data sets, by its names: ``mnist`` and ``fmnist`` (our ``fashion_mnist``).
LILA_BASES = {"mnist": "mnist", "fmnist": "fashion_mnist"}
#: The transformations: suffix or prefix of a set's name → (kind, amount).
LILA_TRANSFORMS = {"{}": ("rotate", 0.0), "{}_r90": ("rotate", 90.0), "{}_r180": ("rotate", 180.0),
                   "translated_{}": ("translate", 8.0), "scaled_{}": ("scale", math.log(2.0))}
LILA_SETS = tuple(pattern.format(base) for base in LILA_BASES for pattern in LILA_TRANSFORMS)
#: The subset sizes of LILA's scripts (all 60,000 leaves no validation split here).
LILA_SIZES = (312, 1250, 5000, 20000)
#: Seeds of LILA's transformations: the training split's and the test split's.
TRANSFORM_SEEDS = {"train": 1, "t10k": 0}


def is_lila(name: str) -> bool:
    return isinstance(name, str) and name.startswith(LILA_PREFIX)


def parse_lila(name: str) -> tuple[str, str, float, int]:
    """(base, kind, amount, N) of ``lila/<set>/<N>``; a DataError that lists the valid ones otherwise."""
    parts = name[len(LILA_PREFIX):].split("/")
    valid = (f"lila/<set>/<N> with <set> one of {', '.join(LILA_SETS)} and N one of "
             f"{', '.join(map(str, LILA_SIZES))} (e.g. lila/mnist_r180/312)")
    if len(parts) != 2 or parts[0] not in LILA_SETS or not parts[1].isdigit() or int(parts[1]) not in LILA_SIZES:
        raise DataError(f"unknown LILA data set {name!r}; valid: {valid}")
    for base in LILA_BASES:
        for pattern, (kind, amount) in LILA_TRANSFORMS.items():
            if pattern.format(base) == parts[0]:
                return LILA_BASES[base], kind, amount, int(parts[1])
    raise AssertionError(parts)  # every name of LILA_SETS matched above


def lila_transformed(images: torch.Tensor, kind: str, amount: float, seed: int) -> torch.Tensor:
    """LILA's transformed copy of raw uint8 images ``[N, H, W]``: one seeded draw per image (see the
    module docstring), bilinear resampling with zero padding, truncated to uint8 as LILA's
    ``.type(uint8)`` does."""
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    zero, one = torch.zeros(n), torch.ones(n)
    if kind == "rotate":
        angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(amount)
        c, s = torch.cos(angle), torch.sin(angle)
        rows, align = ((c, -s, zero), (s, c, zero)), False
    elif kind == "translate":
        shift_x = (torch.rand(n, generator=g) * 2 - 1) * amount / 14.0
        shift_y = (torch.rand(n, generator=g) * 2 - 1) * amount / 14.0
        rows, align = ((one, zero, shift_x), (zero, one, shift_y)), True
    elif kind == "scale":
        zoom = torch.exp((torch.rand(n, generator=g) * 2 - 1) * amount)
        rows, align = ((zoom, zero, zero), (zero, zoom, zero)), True
    else:
        raise ValueError(f"unknown transformation {kind!r}; valid: rotate, translate, scale")
    matrices = torch.stack([torch.stack(row, -1) for row in rows], 1)  # [N, 2, 3]
    x = images.unsqueeze(1).float()
    out = torch.cat([F.grid_sample(chunk, F.affine_grid(m, chunk.shape, align_corners=align), mode="bilinear",
                                   align_corners=align)
                     for chunk, m in zip(x.split(8192), matrices.split(8192))])
    return out[:, 0].to(torch.uint8).clamp(int(images.min()), int(images.max()))


def subset_permutation(seed: int, n: int = 60000) -> torch.Tensor:
    """LILA's ``set_seed(seed); torch.randperm(n)``: its subset is the first N."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def load_lila(name: str, options: LoadOptions) -> DataSplits:
    """``lila/<set>/<N>`` with seed ``options.fold``: N training images, ``options.val_size`` validation
    images (the next of the permutation) and the transformed test set (its first ``test_size``)."""
    base, kind, amount, size = parse_lila(name)
    if options.fold < 0:
        raise DataError(f"the fold of a LILA set is its seed (LILA: 1, 2, 3), a whole number ≥ 0, got {options.fold}")
    root = options.data_root
    if not root.is_dir():
        raise DataError(f"data root {root.resolve()} does not exist. Pass --data-root DIR or set PYRO_PSTN_DATA to the "
                        "folder holding MNIST/ and FashionMNIST/ (in this project: ../shared/data)")
    _, mean, std = BASE_DATASETS[base] if options.normalize else (None, 0.0, 1.0)
    splits = {}
    for split, seed in TRANSFORM_SEEDS.items():
        images, labels = load_idx_pair(str(root), base, split, options.download)
        raw = lila_transformed(torch.from_numpy(np.ascontiguousarray(images)), kind, amount, seed)
        splits[split] = (raw, torch.from_numpy(labels.astype(np.int64)))
    order = subset_permutation(options.fold, len(splits["train"][1]))
    val_size = options.val_size if options.val_size is not None else len(order) - size
    chosen = {"train": order[:size], "val": order[size : size + val_size]}

    def image_set(raw: torch.Tensor, labels: torch.Tensor) -> ImageSet:
        return ImageSet((raw.unsqueeze(1).float() / 255.0 - mean) / std, labels)

    test_raw, test_labels = splits["t10k"]
    test_size = options.test_size or len(test_labels)
    return DataSplits(
        name=name, fold=options.fold,
        train=image_set(*(t[chosen["train"]] for t in splits["train"])),
        val=image_set(*(t[chosen["val"]] for t in splits["train"])),
        test=image_set(test_raw[:test_size], test_labels[:test_size]),
        num_classes=10, mean=mean, std=std,
        source=f"LILA's {name.split('/')[1]} ({kind} {amount:g}; transformation seeds 1 train, 0 test), the first "
               f"{size} of a permutation drawn under seed {options.fold}, the next {val_size} for validation")
