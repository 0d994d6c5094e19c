"""Every named data set in one registry, a user's own added with one call, and files by path.

>>> load_dataset("mnist30", fold=2)                  # a named set
>>> load_dataset("my_images.npz")                    # a file (pyro_pstn.data.files)
>>> register_dataset("sprites", "data/sprites.npz")  # a name for a file ...
>>> register_dataset("toy", lambda options: splits_from_arrays(x, y, seed=options.fold))  # ... or a loader

A loader takes :class:`LoadOptions` and returns :class:`~pyro_pstn.data.types.DataSplits`.
``ucr/<Name>`` names the UCR set in ``<root>/UCR/<Name>/``; ``lila/<set>/<N>`` a subset of LILA's
transformed MNIST / Fashion-MNIST (:mod:`pyro_pstn.data.lila`); a path to an ``.npz``, a folder of
class folders or a UCR ``.tsv`` / ``.ts`` file loads that file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .datasets import DATASET_NAMES as MNIST_FAMILY
from .datasets import load_mnist_family
from .derived import augmented_set, digit_subset
from .files import load_image_folder, load_npz
from .lila import is_lila, load_lila
from .localization import LOCALIZATION_SETS, load_localization
from .mario_iggy import MARIO_IGGY_CLASSES, mario_iggy
from .types import DataError, DataSplits, LoadOptions
from .ucr import load_ucr, load_ucr_path

#: Prefix of the UCR time-series data sets: ``ucr/<Name>`` reads ``<root>/UCR/<Name>/``.
UCR_PREFIX = "ucr/"
#: Suffixes of the files a path may name.
FILE_SUFFIXES = (".npz", ".tsv", ".ts")


Loader = Callable[[LoadOptions], DataSplits]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    load: Loader
    ndim: int | None = 2  # spatial dimensions of its examples (2 images, 1 series), known without loading
    description: str = ""


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, source: Loader | str | os.PathLike, *, ndim: int | None = None, description: str = "",
                     overwrite: bool = False) -> DatasetEntry:
    """Name a data set: ``source`` is a loader (``LoadOptions → DataSplits``) or a file path.

    ``ndim`` (2 for images, 1 for series) lets configs check a transform family before loading.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a data set name is a non-empty string without '/', got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"data set {name!r} is registered already; pass overwrite=True to replace it")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        entry = DatasetEntry(name, lambda options: load_path(path, options), ndim if ndim is not None else _path_ndim(path),
                             description or str(path))
    elif callable(source):
        entry = DatasetEntry(name, source, ndim, description)
    else:
        raise ValueError(f"a data set's source is a loader (LoadOptions → DataSplits) or a path, got {type(source).__name__}")
    _REGISTRY[name] = entry
    return entry


def dataset_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def is_ucr(name: str) -> bool:
    return isinstance(name, str) and name.startswith(UCR_PREFIX) and len(name) > len(UCR_PREFIX)


def is_path(name: str) -> bool:
    """Whether ``name`` names a file or folder rather than a registered set."""
    return isinstance(name, str) and name not in _REGISTRY and not is_ucr(name) and not is_lila(name) and (
        Path(name).suffix in FILE_SUFFIXES or os.sep in name or Path(name).exists())


def is_dataset_name(name: str) -> bool:
    """A registered name, ``ucr/<Name>``, ``lila/<set>/<N>``, or a path (whether it exists, or the LILA
    set is one, is checked on loading)."""
    return isinstance(name, str) and (name in _REGISTRY or is_ucr(name) or is_lila(name) or is_path(name))


def unknown_dataset(name: str) -> str:
    """The one message for a name that is not a data set (config, CLI and loader all use it)."""
    return (f"unknown data set {name!r}; valid names: {', '.join(_REGISTRY)}; or ucr/<Name> for a folder "
            "<root>/UCR/<Name> of the UCR archive (e.g. ucr/FaceAll); or lila/<set>/<N> for a subset of LILA's "
            "transformed MNIST (e.g. lila/mnist_r180/312); or a path to an .npz file, a folder with one "
            "sub-folder of images per class, or a UCR .tsv / .ts file")


def dataset_ndim(name: str) -> int | None:
    """Spatial dimensions of data set ``name`` (2 images, 1 series) where known without loading it."""
    if is_ucr(name):
        return 1
    if is_lila(name):
        return 2
    if name in _REGISTRY:
        return _REGISTRY[name].ndim
    if is_path(name):
        return _path_ndim(Path(name))
    raise DataError(unknown_dataset(name))


def _path_ndim(path: Path) -> int | None:
    return 1 if path.suffix in (".tsv", ".ts") else (2 if path.is_dir() else None)


def load_path(path: str | os.PathLike, options: LoadOptions) -> DataSplits:
    """An ``.npz``, a folder of class folders, or a UCR file (see :mod:`pyro_pstn.data.files`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist: --data takes a data set name ({', '.join(_REGISTRY)}, ucr/<Name>) or "
                        "the path of an .npz file, a folder of class folders or a UCR .tsv / .ts file")
    common = dict(seed=options.fold, val_size=options.val_size, test_size=options.test_size)
    if path.is_dir():
        return load_image_folder(path, normalize=options.normalize, **common)
    if path.suffix == ".npz":
        return load_npz(path, normalize=options.normalize, **common)
    if path.suffix in (".tsv", ".ts"):
        return load_ucr_path(path, **common)
    raise DataError(f"{path}: cannot read a {path.suffix or 'suffix-less'} file; give an .npz (arrays images, labels), "
                    "a folder with one sub-folder of images per class, or a UCR .tsv / .ts file")


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    fold: int = 0,
    val_size: int | None = 1000,
    test_size: int | None = None,
    download: bool = False,
    normalize: bool = True,
) -> DataSplits:
    """Data set ``name`` (a registered name, ``ucr/<Name>`` or a path) as train / validation / test
    splits with its spec. ``fold`` picks an MNIST-subset fold or seeds the split of the others."""
    options = LoadOptions(data_root, fold, val_size, test_size, download, normalize)
    if is_ucr(name):
        return load_ucr(name[len(UCR_PREFIX):], options.data_root, seed=fold, val_size=val_size, test_size=test_size)
    if is_lila(name):
        return load_lila(name, options)
    if name in _REGISTRY:
        return _REGISTRY[name].load(options)
    if is_path(name):
        return load_path(name, options)
    raise DataError(unknown_dataset(name))


# ---- the named sets of the papers --------------------------------------------------------------

def _mnist_family(name: str) -> Loader:
    return lambda options: load_mnist_family(name, options)


for _name in MNIST_FAMILY:
    register_dataset(_name, _mnist_family(_name), ndim=2, description="MNIST / Fashion-MNIST (IDX files)")

#: The Mario-Iggy variants of paper 004 (Fig. 4): name → (rotation range in degrees, modes).
MARIO_IGGY_SETS = {"mario_iggy45": (45.0, 1), "mario_iggy90": (90.0, 1), "mario_iggy_3modes": (30.0, 3)}


def _mario(rotation: float, modes: int) -> Loader:
    return lambda o: mario_iggy(o.data_root, rotation, modes)


for _name, (_rotation, _modes) in MARIO_IGGY_SETS.items():
    register_dataset(_name, _mario(_rotation, _modes), ndim=2,
                     description=f"RGB sprites, {len(MARIO_IGGY_CLASSES)} classes, ±{_rotation:g}° × {_modes} mode(s)")

#: The MNIST digits of paper 004 Fig. 8 (relabelled 0–4).
MNIST_DIGITS = (0, 1, 5, 6, 9)
register_dataset("mnist01569", lambda o: digit_subset(load_mnist_family("mnist", replace(o, fold=0)), MNIST_DIGITS,
                                                      "mnist01569"), ndim=2, description="MNIST digits 0, 1, 5, 6, 9")


def _localization(name: str) -> Loader:
    def load(o: LoadOptions) -> DataSplits:
        s = load_localization(name, o.data_root, o.val_size, o.test_size, download=o.download)
        return DataSplits(name, None, s.train, s.val, s.test, s.num_classes, source=f"{name}: ground-truth θ in {s.layout}")
    return load


for _name in LOCALIZATION_SETS:
    register_dataset(_name, _localization(_name), ndim=2, description="ground-truth transformations (paper 001 §5.1)")

#: Seeds of paper 003's augmented Fashion-MNIST copies (train and test drawn independently).
AUGMENT_SEEDS = {"train": 3, "test": 4}


def _augmented_fashion_mnist(o: LoadOptions) -> DataSplits:
    data = load_mnist_family("fashion_mnist", replace(o, normalize=False))
    return DataSplits("augmented_fashion_mnist", None, augmented_set(data.train, AUGMENT_SEEDS["train"]), data.val,
                      augmented_set(data.test, AUGMENT_SEEDS["test"]), 10,
                      source="Fashion-MNIST, rotated ±10°, shifted ±4 px, scaled ±20 % (paper 003 §3.1), raw [0, 1]")


register_dataset("augmented_fashion_mnist", _augmented_fashion_mnist, ndim=2,
                 description="paper 003's augmented Fashion-MNIST (raw [0, 1])")

__all__ = ["LoadOptions", "DatasetEntry", "register_dataset", "dataset_names", "load_dataset", "load_path",
           "is_dataset_name", "is_ucr", "is_path", "unknown_dataset", "dataset_ndim", "UCR_PREFIX"]
