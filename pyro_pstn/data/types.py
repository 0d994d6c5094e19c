"""The data types every data set shares: its :class:`DataSpec`, an in-memory :class:`ImageSet` and
the :class:`DataSplits` of a data set, in one module (readers import from here, never each other).

A spec says what a network built for the data must take and give: the shape of one example,
(C, H, W) for images or (C, L) for series, the number of classes, the per-channel normalisation
that was applied (x_normalised = (x − mean_c) / std_c) and the background, the value an empty
pixel takes after normalisation, which warps fill in where they sample outside the input.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class DataError(Exception):
    """A data file or data root is missing, corrupt or inconsistent; the message says how to fix it."""


def _per_channel(values: float | Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    values = (values,) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{what} needs 1 or {channels} values (one per channel), got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite, got {values}")
    return tuple(float(v) for v in values)


def background_value(mean: float, std: float) -> float:
    """The value of an empty (black) pixel after normalisation: the fill value for warps."""
    return (0.0 - mean) / std


@dataclass(frozen=True)
class DataSpec:
    """What one example of a data set is: ``shape`` (C, H, W) or (C, L), ``num_classes``, the
    per-channel ``mean`` / ``std`` it was normalised by and its ``background`` (default: where a
    raw value of 0 lands, (0 − mean) / std).

    >>> DataSpec((3, 32, 32), num_classes=7)
    >>> DataSpec.from_dict(spec.to_dict()) == spec
    """

    shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    background: tuple[float, ...] | None = None

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"a data spec's shape is (C, H, W) for images or (C, L) for series, got {self.shape}")
        if int(self.num_classes) < 2:
            raise ValueError(f"a classification data set needs at least 2 classes, got {self.num_classes}")
        channels = shape[0]
        mean = _per_channel(self.mean, channels, "mean")
        std = _per_channel(self.std, channels, "std")
        if min(std) <= 0:
            raise ValueError(f"std must be positive in every channel, got {std}")
        background = (tuple(background_value(m, s) for m, s in zip(mean, std)) if self.background is None
                      else _per_channel(self.background, channels, "background"))
        for name, value in (("shape", shape), ("num_classes", int(self.num_classes)), ("mean", mean), ("std", std),
                            ("background", background)):
            object.__setattr__(self, name, value)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        """Spatial dimensions: 2 for images, 1 for series (what a transform family must warp)."""
        return len(self.shape) - 1

    @property
    def kind(self) -> str:
        return "image" if self.ndim == 2 else "series"

    @property
    def fill(self) -> float | tuple[float, ...]:
        """The background as warps take it: one number where every channel has the same."""
        return self.background[0] if len(set(self.background)) == 1 else self.background

    def describe(self) -> str:
        size = "×".join(str(s) for s in self.shape)
        return f"{self.kind}s {size}, {self.num_classes} classes"

    def check(self, x: torch.Tensor, what: str = "inputs") -> None:
        """A ValueError unless ``x`` is a batch ``[B, *shape]`` of this spec."""
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{what} of shape {got} do not match the model, built for {self.describe()} "
                             f"(a batch [B, {', '.join(map(str, self.shape))}]); build the model from this data's "
                             "spec (build_model(name, data.spec)) or reshape the data")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict) -> "DataSpec":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


#: The papers' image spec: MNIST (normalised by its training mean/std) and its subsets.
MNIST_SPEC = DataSpec((1, 28, 28), 10, (0.1307,), (0.3081,))


#: Where the data root is looked for when neither ``--data-root`` nor ``$PYRO_PSTN_DATA`` names it,
#: in this order: ``./data``, then this checkout's ``data/`` and the ``shared/data`` beside it.
_CHECKOUT = Path(__file__).resolve().parents[2]
DATA_ROOT_CANDIDATES = (Path("data"), _CHECKOUT / "data", _CHECKOUT.parent / "shared" / "data")


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root, found the same way by every command, notebook and the Python API:
    ``data_root`` if given, else ``$PYRO_PSTN_DATA``, else the first of
    :data:`DATA_ROOT_CANDIDATES` that exists (``./data`` if none does)."""
    if data_root is not None:
        return Path(data_root)
    if os.environ.get("PYRO_PSTN_DATA"):
        return Path(os.environ["PYRO_PSTN_DATA"])
    return next((p for p in DATA_ROOT_CANDIDATES if p.is_dir()), DATA_ROOT_CANDIDATES[0])


@dataclass(frozen=True)
class LoadOptions:
    """What a data set's loader is asked for: the data root, the fold (or seed of a split), the first
    ``val_size`` / ``test_size`` examples of those splits (None: all), whether to download, and
    whether to normalise (False keeps raw intensities in [0, 1], as the VAEs' Bernoulli needs)."""

    data_root: Path | None = None  # None: $PYRO_PSTN_DATA, else ./data
    fold: int = 0
    val_size: int | None = 1000
    test_size: int | None = None
    download: bool = False
    normalize: bool = True

    def __post_init__(self):
        object.__setattr__(self, "data_root", resolve_data_root(self.data_root))
        for label in ("val_size", "test_size"):
            size = getattr(self, label)
            if size is not None and size < 1:
                raise DataError(f"{label} must be a positive number of examples, got {size}")


@dataclass
class ImageSet(Dataset):
    """An in-memory data set: ``images`` [N, C, H, W] (or series [N, C, L]), normalised, and
    integer ``labels`` [N]. A torch ``Dataset`` of ``(x, y)`` pairs; indexing with a list or an
    index tensor gives a whole batch at once."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | list[int] | torch.Tensor):
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        return self.images[index], self.labels[index]

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))


@dataclass
class DataSplits:
    """Train, validation and test sets of one data set, with its :class:`DataSpec`.

    ``num_classes``, ``mean`` and ``std`` (a number or one per channel) make the spec when none is
    given; ``source`` says where the examples and the split came from.
    """

    name: str
    fold: int | None
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    source: str = ""
    spec: DataSpec | None = field(default=None)

    def __post_init__(self):
        if self.spec is None:
            self.spec = DataSpec(tuple(self.train.images.shape[1:]), self.num_classes, self.mean, self.std)

    @property
    def background(self) -> float | tuple[float, ...]:
        return self.spec.fill


def stratified_split(labels: np.ndarray, seed: int, val_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices: per class, a seeded shuffle and ``val_fraction`` of it (at least
    one, while one stays) held out."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(1, round(val_fraction * len(idx))), len(idx) - 1)
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
