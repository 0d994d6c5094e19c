"""Data sets and their specs; reading never needs the network.

Every data set carries a :class:`DataSpec` (shape, classes, normalisation, background). Named sets
live in one registry (:func:`register_dataset`, :func:`dataset_names`); :func:`load_dataset` also
takes the path of a user's ``.npz``, folder of class folders or UCR file, ``ucr/<Name>`` and LILA's
transformed subsets ``lila/<set>/<N>``.
"""
from .datasets import SUBSET_SIZES, balanced_folds, parse_dataset_name, subset_size
from .derived import augmented_set, digit_subset, random_affine_copy
from .download import download
from .files import load_image_folder, load_npz, splits_from_arrays
from .idx import parse_idx, read_idx, write_idx
from .lila import LILA_PREFIX, LILA_SETS, LILA_SIZES, is_lila, lila_transformed, load_lila
from .mario_iggy import MARIO_IGGY_CLASSES, RotatedImageSet, load_sprites, mario_iggy
from .registry import (
                       MARIO_IGGY_SETS,
                       MNIST_DIGITS,
                       UCR_PREFIX,
                       DatasetEntry,
                       dataset_names,
                       dataset_ndim,
                       is_dataset_name,
                       is_path,
                       is_ucr,
                       load_dataset,
                       register_dataset,
                       unknown_dataset,
)
from .types import (
                       MNIST_SPEC,
                       DataError,
                       DataSpec,
                       DataSplits,
                       ImageSet,
                       LoadOptions,
                       background_value,
                       resolve_data_root,
                       stratified_split,
)

__all__ = [
    "LILA_PREFIX", "LILA_SETS", "LILA_SIZES", "MARIO_IGGY_CLASSES", "MARIO_IGGY_SETS", "MNIST_DIGITS", "MNIST_SPEC",
    "SUBSET_SIZES", "UCR_PREFIX",
    "DataError", "DataSpec", "DataSplits", "DatasetEntry", "ImageSet", "LoadOptions", "RotatedImageSet",
    "augmented_set", "background_value", "balanced_folds", "dataset_names", "dataset_ndim", "digit_subset", "download",
    "is_dataset_name", "is_lila", "is_path", "is_ucr", "lila_transformed", "load_dataset", "load_lila", "load_image_folder",
    "load_npz", "load_sprites",
    "mario_iggy", "parse_dataset_name", "subset_size", "parse_idx", "random_affine_copy", "read_idx", "register_dataset",
    "resolve_data_root", "splits_from_arrays", "stratified_split", "unknown_dataset", "write_idx",
]
