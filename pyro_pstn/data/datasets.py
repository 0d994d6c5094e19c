"""MNIST, Fashion-MNIST and the papers' MNIST subsets (``mnist10`` … ``mnist10000``, folds 0–4).

Data root: an explicit argument, else ``$PYRO_PSTN_DATA``, else ``./data``; files are looked up
in torchvision's layout ``<root>/MNIST/raw/train-images-idx3-ubyte.gz`` (``.gz`` or raw).

Splits
------
* ``mnistN``, fold k: the authors' index file ``<root>/mnist_subset_indices/MNIST{N}_train_indices_fold_{k}.npy``
  (UAI 2022, so our numbers compare to theirs); validation ``MNIST{N}_validation_indices.npy``,
  which is disjoint from all five folds (we check). Without those files: :func:`balanced_folds`.
* ``mnist`` / ``fashion_mnist``: a seeded (42) 50,000 / 10,000 split of the official training set.
* Test is always the official 10,000-image test set (optionally its first ``test_size`` images,
  for quick runs and tests), never redrawn.

Images are scaled to [0, 1] and normalised by the training-set mean/std; ``background`` is the
value an empty pixel takes after normalisation, which warps use as their fill value.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import torch

from .download import SHA256
from .download import download as download_files
from .idx import read_idx
from .types import DataError, DataSplits, ImageSet, LoadOptions

SUBSET_SIZES = (10, 30, 100, 1000, 3000, 10000)
NUM_FOLDS = 5
#: name → (folder in the data root, normalisation mean, std)
BASE_DATASETS = {"mnist": ("MNIST", 0.1307, 0.3081), "fashion_mnist": ("FashionMNIST", 0.2860, 0.3530)}
DATASET_NAMES = tuple(BASE_DATASETS) + tuple(f"mnist{n}" for n in SUBSET_SIZES)
#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def parse_dataset_name(name: str) -> tuple[str, int | None]:
    """``'mnist30'`` → ``('mnist', 30)``; ``'fashion_mnist'`` → ``('fashion_mnist', None)``."""
    if name in BASE_DATASETS:
        return name, None
    match = re.fullmatch(r"mnist(\d+)", name)
    if match and int(match.group(1)) in SUBSET_SIZES:
        return "mnist", int(match.group(1))
    raise DataError(f"{name!r} is not one of the MNIST family: {', '.join(DATASET_NAMES)}")



def subset_size(name: str) -> int | None:
    """N of an ``mnistN`` subset (the key of the papers' tables and of the authors' per-subset
    defaults); None for every other data set."""
    try:
        return parse_dataset_name(name)[1]
    except DataError:
        return None

def _find_file(candidates: list[Path], stem: str) -> Path | None:
    for folder in candidates:
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


@functools.lru_cache(maxsize=4)
def load_idx_pair(root: str, base: str, split: str, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images [N, 28, 28] and labels [N] of ``split`` ('train' or 't10k')."""
    folder = BASE_DATASETS[base][0]
    candidates = [Path(root) / folder / "raw", Path(root) / folder, Path(root)]
    if base == "fashion_mnist":
        candidates.append(DEBIAN_FASHION_MNIST)
    stems = (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte")
    paths = [_find_file(candidates, stem) for stem in stems]
    if None in paths and download:
        download_files(folder, root)
        paths = [_find_file(candidates, stem) for stem in stems]
    if None in paths:
        missing = [s for s, p in zip(stems, paths) if p is None]
        raise DataError(
            f"{base}: cannot find {', '.join(m + '[.gz]' for m in missing)}; looked in "
            + ", ".join(str(c) for c in candidates)
            + f". Point --data-root or $PYRO_PSTN_DATA at a folder holding {folder}/raw/*.gz "
            f"(files: {', '.join(SHA256[folder])}), or pass --download on a machine with internet."
        )
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{base} {split}: images {images.shape} and labels {labels.shape} do not match "
            "(expected [N, H, W] and [N]); the files are from different data sets or corrupt"
        )
    if labels.max(initial=0) > 9:
        raise DataError(f"{base} {split}: label {labels.max()} out of range 0..9; the label file is corrupt")
    return images, labels


def balanced_folds(
    labels: np.ndarray, n: int, num_folds: int = NUM_FOLDS, seed: int = 0, val_size: int = 10000
) -> tuple[list[np.ndarray], np.ndarray]:
    """Fallback when the authors' fold files are absent: seeded, class-balanced, disjoint folds.

    Each class's indices are shuffled with ``numpy.random.default_rng(seed)``; fold k takes the
    k-th block of n/10 indices of every class, so the folds are disjoint and each holds n/10
    images per class. Validation is ``val_size`` of the remaining indices (shuffled), so it is
    disjoint from every fold.
    """
    classes = np.unique(labels)
    per_class = n // len(classes)
    if per_class * len(classes) != n:
        raise DataError(f"subset size {n} is not a multiple of the number of classes {len(classes)}")
    rng = np.random.default_rng(seed)
    folds: list[list[np.ndarray]] = [[] for _ in range(num_folds)]
    rest = []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < per_class * num_folds:
            raise DataError(f"class {c} has only {len(idx)} images, fewer than {num_folds}×{per_class}")
        for k in range(num_folds):
            folds[k].append(idx[k * per_class : (k + 1) * per_class])
        rest.append(idx[num_folds * per_class :])
    validation = rng.permutation(np.concatenate(rest))[:val_size]
    return [np.sort(np.concatenate(f)) for f in folds], validation


def _load_indices(path: Path, n_train: int) -> np.ndarray:
    try:
        idx = np.load(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read fold indices ({err}); the file is corrupt") from None
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n_train:
        raise DataError(f"{path}: expected a 1-D array of integer indices in [0, {n_train}), got {idx.dtype} {idx.shape}")
    return idx.astype(np.int64)


def subset_indices(root: Path, n: int, fold: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and validation indices of ``mnist{n}`` fold ``fold``, and where they came from."""
    folder = root / "mnist_subset_indices"
    train_file = folder / f"MNIST{n}_train_indices_fold_{fold}.npy"
    val_file = folder / f"MNIST{n}_validation_indices.npy"
    if train_file.is_file() and val_file.is_file():
        train, val = _load_indices(train_file, len(labels)), _load_indices(val_file, len(labels))
        source = f"authors' fold files ({folder})"
    else:
        folds, val = balanced_folds(labels, n)
        train = folds[fold]
        source = "seeded class-balanced sampler (fold files not found in " + str(folder) + ")"
    if len(train) != n:
        raise DataError(f"{train_file}: expected {n} training indices, found {len(train)}")
    if np.intersect1d(train, val).size:
        raise DataError(f"validation indices of mnist{n} overlap fold {fold}'s training indices")
    return train, val, source


def _to_set(images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> ImageSet:
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return ImageSet((x - mean) / std, torch.from_numpy(labels.astype(np.int64)))


def load_mnist_family(name: str, options: LoadOptions = LoadOptions()) -> DataSplits:
    """Load ``name`` (one of :data:`DATASET_NAMES`) as normalised train / validation / test sets.

    ``options.val_size`` keeps the first that many validation images (``None``: all 10,000);
    ``options.test_size`` the first that many test images (``None``: all 10,000).
    ``normalize=False`` keeps raw pixel intensities in [0, 1] (background 0), as the Bernoulli
    likelihood of the VAEs needs.
    """
    fold, val_size, test_size, download = options.fold, options.val_size, options.test_size, options.download
    base, n = parse_dataset_name(name)
    if not 0 <= fold < NUM_FOLDS:
        raise DataError(f"fold must be in 0..{NUM_FOLDS - 1}, got {fold}")
    root = options.data_root
    if not root.is_dir() and not download:
        raise DataError(
            f"data root {root.resolve()} does not exist. Pass --data-root DIR or set PYRO_PSTN_DATA to the folder "
            "holding MNIST/raw/*.gz (in this project: ../shared/data), or pass --download on a machine with internet."
        )
    _, mean, std = BASE_DATASETS[base] if options.normalize else (None, 0.0, 1.0)
    train_images, train_labels = load_idx_pair(str(root), base, "train", download)
    test_images, test_labels = load_idx_pair(str(root), base, "t10k", download)
    if n is None:
        perm = np.random.default_rng(42).permutation(len(train_labels))
        val_idx, train_idx, source = perm[:10000], np.sort(perm[10000:]), "seeded 50k/10k split (seed 42)"
    else:
        train_idx, val_idx, source = subset_indices(root, n, fold, train_labels)
    val_idx = val_idx[:val_size]
    test_slice = slice(0, test_size)
    return DataSplits(
        name=name,
        fold=fold if n is not None else None,
        train=_to_set(train_images[train_idx], train_labels[train_idx], mean, std),
        val=_to_set(train_images[val_idx], train_labels[val_idx], mean, std),
        test=_to_set(test_images[test_slice], test_labels[test_slice], mean, std),
        num_classes=10,
        mean=mean,
        std=std,
        source=source,
    )
