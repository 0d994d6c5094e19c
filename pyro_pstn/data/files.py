"""A user's own data from files: an ``.npz`` of arrays, a folder of images per class, or arrays.

* ``PATH.npz`` with ``images`` — [N, C, H, W] or [N, H, W] images, [N, L] or [N, C, L] series
  (a 3-D array is images when its second axis has 16 or more entries, else series [N, C, L]; a
  string array ``kind`` = ``"image"`` or ``"series"`` says so explicitly) — uint8 (scaled to [0, 1])
  or float, and ``labels`` [N] integers 0..K−1; optionally ``test_images`` / ``test_labels``.
* a folder with one sub-folder of images per class (any format Pillow reads; the classes are the
  sub-folders in sorted order; every image is converted to the mode and size of the first one).
* UCR ``.tsv`` / ``.ts`` files: :func:`pyro_pstn.data.ucr.load_ucr_path`.

Splits (:func:`splits_from_arrays`): without a test set, a seeded stratified
:data:`TEST_FRACTION` of each class is held out as test; then :data:`VAL_FRACTION` of the rest is
validation. The seed is the run's fold. Every channel is normalised by the training split's own
mean and standard deviation, and the spec records both.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .types import DataError, DataSpec, DataSplits, ImageSet, stratified_split

#: Share of each class held out as test (when the file has no test set) and as validation.
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
#: Image suffixes a class folder is read for.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
NPZ_HELP = ("an .npz needs arrays 'images' ([N, C, H, W] or [N, H, W] images, [N, L] or [N, C, L] series; uint8 or "
            "float) and 'labels' ([N] integers 0..K-1), optionally 'test_images' and 'test_labels'")


def _as_examples(images: np.ndarray, kind: str | None, where: str) -> np.ndarray:
    """[N, C, *spatial] float32 (uint8 scaled to [0, 1])."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.number) and not np.issubdtype(images.dtype, np.complexfloating):
        images = images.astype(np.float32)
    else:
        raise DataError(f"{where}: images must be uint8 or float, got {images.dtype}; {NPZ_HELP}")
    if kind is None:
        kind = "series" if images.ndim == 2 or (images.ndim == 3 and images.shape[1] < 16) else "image"
    if kind not in ("image", "series"):
        raise DataError(f"{where}: kind must be 'image' or 'series', got {kind!r}")
    wanted = {"image": (3, 4), "series": (2, 3)}[kind]
    if images.ndim not in wanted:
        raise DataError(f"{where}: {kind} data of shape {images.shape}; {NPZ_HELP}")
    if images.ndim == wanted[0]:
        images = images[:, None]
    if not np.isfinite(images).all():
        raise DataError(f"{where}: {int((~np.isfinite(images)).sum())} values are NaN or infinite; clean the data")
    return images


def _as_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(f"{where}: labels of shape {labels.shape} for {n} examples; labels must be [N]")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            raise DataError(f"{where}: labels are {labels.dtype}; store them as integers 0..K-1 "
                            "(labels.astype(np.int64))")
        raise DataError(f"{where}: labels must be integers 0..K-1, got {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where}: labels must be integers 0..K-1, found {labels.min()}")
    return labels.astype(np.int64)


def splits_from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    *,
    name: str = "arrays",
    seed: int = 0,
    val_size: int | None = None,
    test_size: int | None = None,
    normalize: bool = True,
    kind: str | None = None,
    num_classes: int | None = None,
) -> DataSplits:
    """:class:`DataSplits` of arrays (see the module docstring for shapes, splits and normalisation).

    >>> data = splits_from_arrays(x, y, seed=0)   # x: [N, 3, 32, 32] uint8, y: [N] int
    >>> data.spec
    DataSpec(shape=(3, 32, 32), num_classes=7, ...)
    """
    x = _as_examples(images, kind, name)
    y = _as_labels(labels, len(x), name)
    if len(x) == 0:
        raise DataError(f"{name}: no examples; {NPZ_HELP}")
    if (test_images is None) != (test_labels is None):
        raise DataError(f"{name}: give both test_images and test_labels, or neither")
    if test_images is not None:
        x_test = _as_examples(test_images, "series" if x.ndim == 3 else "image", f"{name} (test)")
        y_test = _as_labels(test_labels, len(x_test), f"{name} (test)")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{name}: test examples {x_test.shape[1:]} differ from training examples {x.shape[1:]}")
        test_note = "its own test set"
    else:
        _check_class_sizes(y, 3, name)
        keep, held = stratified_split(y, seed + 10_000, TEST_FRACTION)
        x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
        test_note = f"a stratified {TEST_FRACTION:.0%} held out as test (seed {seed + 10_000})"
    _check_class_sizes(y, 2, name)
    k = int(max(y.max(), y_test.max(initial=0))) + 1 if num_classes is None else int(num_classes)
    if y_test.size and y_test.max() >= k:
        raise DataError(f"{name}: a test label {y_test.max()} is outside the training classes 0..{k - 1}")
    if len(np.unique(y)) < 2:
        raise DataError(f"{name}: every training example has label {y[0]}; classification needs at least two classes")
    train_idx, val_idx = stratified_split(y, seed, VAL_FRACTION)
    axes = (0, *range(2, x.ndim))
    mean = x[train_idx].mean(axis=axes) if normalize else np.zeros(x.shape[1])
    std = x[train_idx].std(axis=axes) if normalize else np.ones(x.shape[1])
    std = np.where(std > 1e-8, std, 1.0)  # a constant channel stays as it is

    def to_set(a: np.ndarray, b: np.ndarray) -> ImageSet:
        shape = (1, -1) + (1,) * (a.ndim - 2)
        normalised = (a - mean.reshape(shape)) / std.reshape(shape)
        return ImageSet(torch.from_numpy(normalised.astype(np.float32)), torch.from_numpy(b))

    spec = DataSpec(tuple(x.shape[1:]), k, tuple(mean.tolist()), tuple(std.tolist()))
    return DataSplits(
        name=name, fold=seed,
        train=to_set(x[train_idx], y[train_idx]),
        val=to_set(x[val_idx][:val_size], y[val_idx][:val_size]),
        test=to_set(x_test[:test_size], y_test[:test_size]),
        num_classes=k, mean=spec.mean, std=spec.std, spec=spec,
        source=f"{name}: stratified {1 - VAL_FRACTION:.0%} / {VAL_FRACTION:.0%} train / validation split (seed {seed}); "
               f"test: {test_note}",
    )


def _check_class_sizes(labels: np.ndarray, least: int, where: str) -> None:
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < least:
        raise DataError(f"{where}: class {classes[counts.argmin()]} has {counts.min()} example(s); each class needs at "
                        f"least {least} to be split into train, validation{' and test' if least > 2 else ''}")


def load_npz(path: str | os.PathLike, **options) -> DataSplits:
    """:func:`splits_from_arrays` of the arrays of an ``.npz`` file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path} cannot be read as an .npz archive ({type(err).__name__}: {err}); {NPZ_HELP}") from None
    missing = [key for key in ("images", "labels") if key not in arrays]
    if missing:
        raise DataError(f"{path} has no array {' or '.join(map(repr, missing))} (it holds {sorted(arrays)}); {NPZ_HELP}")
    kind = str(arrays["kind"]) if "kind" in arrays else None
    return splits_from_arrays(arrays["images"], arrays["labels"], arrays.get("test_images"), arrays.get("test_labels"),
                              name=str(path), kind=kind, **options)


def load_image_folder(path: str | os.PathLike, **options) -> DataSplits:
    """:func:`splits_from_arrays` of a folder with one sub-folder of images per class (Pillow)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{path}: a folder of images needs one sub-folder per class (at least two), found "
                        f"{len(classes)}")
    images, labels, mode, size = [], [], None, None
    for label, folder in enumerate(classes):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this class folder")
        for file in files:
            try:
                with Image.open(file) as image:
                    mode = mode or ("L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB")
                    size = size or image.size
                    array = np.asarray(image.convert(mode).resize(size))
            except (OSError, UnidentifiedImageError) as err:
                raise DataError(f"{file} cannot be read as an image ({type(err).__name__}: {err})") from None
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    source = f"{path} (classes: {', '.join(c.name for c in classes)})"
    return splits_from_arrays(np.stack(images), np.array(labels), name=source, kind="image", **options)
