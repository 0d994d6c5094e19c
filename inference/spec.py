"""The specification of one fit: which model, on which data, trained how, evaluated how.

A :class:`FitConfig` knows no paper's protocol (``experiments.config.authors_config`` fills in the
authors' values); it is written to a run's ``config.json`` and read back by ``--resume`` and
:func:`inference.kinds.load_run`. Its :meth:`~FitConfig.identity` is what makes two runs the same.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from pyro_pstn.data import DataSpec, dataset_ndim, is_dataset_name, is_path, load_dataset, unknown_dataset
from pyro_pstn.models import BOX_MODELS, MODEL_NAMES, check_layout_family
from pyro_pstn.transforms import LIE_LAYOUTS

from .engine import TrainConfig
from .runs import identity

T = TypeVar("T")

#: What a warp puts where it samples outside the input: ``background``, the value of an empty pixel
#: after normalisation (ours), or ``zero``, 0 in normalised units (the authors' ``grid_sample``
#: default, the mean intensity, not the background: anchors.md §1.7, pytorch/tutorials#1117).
FILLS = ("background", "zero")


@dataclass
class FitConfig:
    """Everything that determines one run; written to ``config.json`` in the run directory."""

    model: str = "gamma_pstn"
    data: str = "mnist30"
    fold: int = 0
    layout: str = "similarity"
    prior_scale: float | None = None  # σ_p (pstn) or σ_DA (da); None: build_model's
    gamma_concentration: float = 1.0  # α0
    gamma_rate: float = 1.0  # β0
    spread_init: float = -5.0  # initial bias of the σ / β head (the authors' var_init); augerino: its initial ρ
    fill: str = "background"  # see FILLS
    align_corners: bool = False
    test_samples: int = 10  # S at test time
    evaluate_on: str = "test"  # "val" for model selection (grid searches): the test set is never looked at
    val_size: int | None = 1000
    test_size: int | None = None  # None: the full 10,000-image test set
    posterior_images: int = 16  # test images whose θ posterior is saved for ArviZ
    posterior_draws: int = 200
    data_root: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    # Recorded when the data are loaded (not part of a run's identity): the data's spec
    # (DataSpec.to_dict) and where its examples and split came from.
    spec: dict | None = None
    data_source: str | None = None

    def __post_init__(self):
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; valid models: {', '.join(MODEL_NAMES)}")
        if not is_dataset_name(self.data):
            raise ValueError(unknown_dataset(self.data))
        if is_path(self.data) and not Path(self.data).exists():
            raise ValueError(f"{self.data} does not exist: --data takes a data set name or the path of an .npz file, "
                             "a folder of class folders or a UCR .tsv / .ts file")
        ndim = dataset_ndim(self.data)
        if ndim is not None:  # else checked when the data are loaded
            self.layout = check_layout_family(self.layout, ndim).name  # before anything is written
        if self.model in BOX_MODELS and self.layout not in LIE_LAYOUTS:
            raise ValueError(f"{self.model} needs a Lie layout (θ in [−1, 1], identity 0), got {self.layout!r}; "
                             f"valid: {', '.join(LIE_LAYOUTS)}")
        if self.fill not in FILLS:
            raise ValueError(f"unknown fill {self.fill!r}; valid: {', '.join(FILLS)}")
        if self.evaluate_on not in ("test", "val"):
            raise ValueError(f"evaluate_on must be 'test' or 'val', got {self.evaluate_on!r}")
        for name in ("test_samples", "posterior_images", "posterior_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.prior_scale is not None and self.prior_scale <= 0:
            raise ValueError(f"prior_scale must be positive, got {self.prior_scale}")

    @property
    def data_label(self) -> str:
        """The data set's name in run names: a path's file name, ``ucr/X`` as ``ucr-X``."""
        return Path(self.data).stem if is_path(self.data) else self.data.replace("/", "-")

    def record_data(self, spec: dict, source: str) -> None:
        """Note the loaded data's spec and source (written to ``config.json`` with the rest)."""
        self.spec, self.data_source = spec, source

    def data_spec(self) -> DataSpec:
        """The spec the run's model was built for: recorded at fit time, else (runs from before
        specs were recorded) read off the data set itself."""
        if self.spec is not None:
            return DataSpec.from_dict(self.spec)
        return load_dataset(self.data, self.data_root, self.fold, self.val_size, self.test_size).spec

    def identity(self) -> dict:
        """What makes two configs the same run: all fields but those recorded about the data and
        the machine (:func:`~inference.runs.identity`)."""
        return identity(asdict(self))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "FitConfig":
        return config_from_dict(cls, json.loads(text))


#: The fields of a :class:`TrainConfig`: how any kind of run is trained.
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def training(given: TrainConfig | dict, defaults: dict, val_every: Callable[[int], int] | None = None) -> TrainConfig:
    """A run spec's training: ``given`` itself where it is a :class:`TrainConfig`, else its fields
    (a dict) over ``defaults``, the training protocol of that kind of run; ``val_every(epochs)``, where
    given, is that protocol's validation interval for the run's epochs (unless the dict sets one)."""
    if isinstance(given, TrainConfig):
        return given
    if not isinstance(given, dict):
        raise ValueError(f"train must be a TrainConfig or a dict of its fields, got {type(given).__name__}")
    unknown = set(given) - TRAIN_FIELDS
    if unknown:
        raise ValueError(f"unknown training fields {sorted(unknown)}; valid: {sorted(TRAIN_FIELDS)}")
    fields = {**defaults, **given}
    if val_every is not None and "val_every" not in given:
        fields["val_every"] = val_every(fields["epochs"])
    return TrainConfig(**fields)


def nest_training(cls: type, raw: dict) -> dict:
    """``raw`` with the training fields that a config of ``cls`` written before its training became one
    :class:`TrainConfig` kept at its top level (``epochs``, ``lr``, ``seed``, …; renamed by the class's
    ``LEGACY_TRAIN_FIELDS``) moved under ``train``; other configs as they are."""
    names = {f.name for f in dataclasses.fields(cls)}
    if "train" not in names or "train" in raw:
        return raw
    renames = getattr(cls, "LEGACY_TRAIN_FIELDS", {})
    moved = {k for k in raw if k not in names and renames.get(k, k) in TRAIN_FIELDS}
    return {**{k: v for k, v in raw.items() if k not in moved}, "train": {renames.get(k, k): raw[k] for k in moved}}


def config_from_dict(cls: type[T], raw: dict) -> T:
    """The dataclass ``cls`` from a dict (of the current format or an earlier one, :func:`nest_training`),
    rejecting unknown keys (listing the valid ones)."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object of {cls.__name__} fields, got {type(raw).__name__}")
    raw = nest_training(cls, raw)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**raw)


def read_json(path: str | os.PathLike, what: str = "run config") -> object:
    """The JSON at ``path`` (a run's ``config.json``), or a ValueError that names the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: is {path.parent} a run directory?")
    try:
        return json.loads(path.read_text())
    except PermissionError:
        raise ValueError(f"{path}: permission denied; make it readable (chmod u+r) and try again") from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(_unreadable(path, what, err)) from None


def read_config(cls: type[T], path: str | os.PathLike, raw: object = None) -> T:
    """The dataclass ``cls`` saved as JSON at ``path`` (``raw``: its content, where already read), or a
    ValueError that names the file and what to do."""
    raw = read_json(path, cls.__name__) if raw is None else raw
    try:
        return config_from_dict(cls, raw)
    except (ValueError, TypeError) as err:
        raise ValueError(_unreadable(Path(path), cls.__name__, err)) from None


def _unreadable(path: Path, what: str, err: Exception) -> str:
    return (f"{path} cannot be read as a {what} ({type(err).__name__}: {err}): the file is corrupt or was edited "
            "by hand. Restore it, or delete the run directory and fit again")
