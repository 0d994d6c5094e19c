"""Data readers and data sets; reading never needs the network."""
from .datasets import (
    DATASET_NAMES,
    SUBSET_SIZES,
    DataSplits,
    ImageSet,
    UCR_PREFIX,
    balanced_folds,
    data_family,
    dataset_background,
    is_dataset_name,
    is_ucr,
    load_dataset,
    parse_dataset_name,
    resolve_data_root,
    unknown_dataset,
)
from .derived import augmented_set, random_affine_copy
from .download import download
from .mario_iggy import MARIO_IGGY_CLASSES, RotatedImageSet, load_sprites, mario_iggy
from .idx import DataError, parse_idx, read_idx, write_idx

__all__ = [
    "MARIO_IGGY_CLASSES",
    "RotatedImageSet",
    "load_sprites",
    "mario_iggy",
    "DATASET_NAMES",
    "SUBSET_SIZES",
    "DataError",
    "DataSplits",
    "augmented_set",
    "random_affine_copy",
    "ImageSet",
    "UCR_PREFIX",
    "balanced_folds",
    "data_family",
    "is_dataset_name",
    "is_ucr",
    "unknown_dataset",
    "dataset_background",
    "download",
    "load_dataset",
    "parse_dataset_name",
    "parse_idx",
    "read_idx",
    "resolve_data_root",
    "write_idx",
]
