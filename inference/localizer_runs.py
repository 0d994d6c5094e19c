"""Localizers in front of a frozen classifier (paper 001 §5.1) and the STN's failure mode (§5.4).

Three kinds of run, each a config, a run directory ``<run_root>/<name>/`` and a record:
:class:`PretrainConfig` (:func:`pretrain`) fits the paper's 28k CNN on upright images;
:class:`LocalizeConfig` (:func:`run_localize`) fits a localizer (STN, P-STN, Gamma P-STN) in front of
that classifier, frozen, on a set transformed by known ground-truth transformations, and measures
the posterior predictive, the transformation error ε = mean ‖θ_true − μ(x)‖ (001 eq. 18) and the
spread of images localized worse vs better than the median; :class:`FailureConfig`
(:func:`run_failure`) fits an MLP of a given depth alone or behind a localizer, end to end (001 Fig. 12).
The defaults are the authors' settings (``../shared/reference/anchors.md`` §1.6).
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from pyro_pstn.data import DataSplits, ImageSet, load_dataset
from pyro_pstn.data.localization import LOCALIZATION_SETS, load_localization
from pyro_pstn.models import CNN, PSTN, STN, GammaPSTN, TransformClassifier
from pyro_pstn.nets import Frozen, MLPClassifier, large_localizer, mnist_cnn_classifier, mnist_pstn_localizer, mnist_stn_localizer
from pyro_pstn.priors import GammaPrior, NormalPrior
from pyro_pstn.transforms import get_layout

from .engine import CHECKPOINT, TrainConfig, Trainer, read_checkpoint
from .localization import posterior_variance, spread_by_error, transformation_errors
from .metrics import classification_metrics
from .predictive import posterior_draws, predict
from .runs import open_run, run_record
from .spec import training
from .stacked import fit_stack, stack_dir_name

LOCALIZER_MODELS = ("stn", "pstn", "gamma_pstn")
#: The base data set whose upright images each localization set transforms.
BASE_OF = {name: base for name, (base, _) in LOCALIZATION_SETS.items()}
#: The localizer's learning-rate multiplier of the authors' script for each set (rotated MNIST 1, placement 0.1).
LOCALIZER_LR_MULT = {"rotated_mnist": 1.0, "placed_fashion_mnist": 0.1}
#: Data sets a classifier is pretrained on (the base sets of the localization sets).
PRETRAIN_DATA = ("mnist", "fashion_mnist")


# ---- the frozen classifier -----------------------------------------------------------------------

@dataclass
class PretrainConfig:
    """The paper's 28k CNN on upright images (``UAI_pretrain_mnist.sh``: batch 64, Adam 1e-3, 100
    epochs with a step decay every 10; ours: constant lr, 10 epochs unless ``train`` says otherwise)."""

    data: str = "mnist"
    data_root: str | None = None
    train_size: int | None = None  # smoke runs only
    train: TrainConfig | dict = field(default_factory=dict)  # a dict: fields over the defaults below

    def __post_init__(self):
        if self.data not in PRETRAIN_DATA:
            raise ValueError(f"unknown data {self.data!r}; valid: {', '.join(PRETRAIN_DATA)}")
        self.train = training(self.train, dict(epochs=10, batch_size=64, lr=1e-3, weight_decay=0.0, seed=0),
                              val_every=lambda epochs: epochs)

    @property
    def name(self) -> str:
        return f"classifier-{self.data}-e{self.train.epochs}" + (f"-smoke{self.train_size}" if self.train_size else "")


def pretrain(config: PretrainConfig, run_root: Path, progress: bool | None = None) -> dict:
    """Fit the CNN on the 50,000 training images and report its test accuracy on upright images."""
    start = time.perf_counter()
    data = load_dataset(config.data, config.data_root, val_size=None, normalize=False)
    train = data.train if config.train_size is None else ImageSet(data.train.images[: config.train_size],
                                                                  data.train.labels[: config.train_size])
    torch.manual_seed(config.train.seed)
    model = CNN(mnist_cnn_classifier())
    trainer = Trainer(model, config.train)
    run_dir = Path(run_root) / config.name
    open_run(run_dir, asdict(config), trainer)
    trainer.fit(train, data.val, run_dir=run_dir, progress=progress)
    test = classification_metrics(predict(model.cpu(), data.test.images, 1), data.test.labels)
    return run_record(config, start, {"test": test}, trainer)


def load_classifier(run_root: Path, data: str, name: str | None = None) -> torch.nn.Module:
    """The pretrained classifier's network (not frozen yet): the run ``name`` under ``run_root``
    (default: ``pretrain --data <data>`` with its default epochs), or a clear error naming the command."""
    run_dir = Path(run_root) / (name or PretrainConfig(data=data).name)
    if not (run_dir / CHECKPOINT).exists():
        raise ValueError(f"no pretrained classifier in {run_dir}: run `python -m experiments.localize pretrain --data "
                         f"{data}` first (or pass --classifier <run name> of another pretrain run)")
    model = CNN(mnist_cnn_classifier())
    model.load_state_dict(read_checkpoint(run_dir / CHECKPOINT)["model"])
    return model.classifier


# ---- localizers around it ------------------------------------------------------------------------

def localizer_training(given: TrainConfig | dict, localizer_lr_mult: float, samples: int | None,
                       kl_weight: float | None) -> TrainConfig:
    """What every localization fit trains with (001's settings, anchors.md §1.6, as defaults under
    ``given``): batch 64, Adam lr 1e-3 without weight decay, S = 10 samples, w = 3e-5, 100 epochs,
    validation five times and a checkpoint every epoch. ``samples`` / ``kl_weight``, where not None,
    are what the model needs whatever was given: 1 sample for a model that draws nothing, the KL
    weight D of the Gaussian P-STN (as 000)."""
    train = training(given, dict(epochs=100, batch_size=64, lr=1e-3, localizer_lr_mult=localizer_lr_mult,
                                 weight_decay=0.0, num_particles=10, kl_weight=3e-5, checkpoint_every=1, seed=0),
                     val_every=lambda epochs: max(1, epochs // 5))
    forced = {k: v for k, v in (("num_particles", samples), ("kl_weight", kl_weight)) if v is not None}
    return dataclasses.replace(train, **forced) if forced else train


def _smoke_suffix(train_size: int | None, test_size: int | None) -> list[str]:
    return [f"smoke{train_size or 'all'}x{test_size or 'all'}"] if train_size or test_size else []


@dataclass
class LocalizeConfig:
    """One localizer fit in front of a frozen classifier (defaults: 001 §5.1.1's settings). The
    Gaussian P-STN's KL weight is D, as in 000; ``train``'s ``kl_weight`` is the Gamma P-STN's w; the
    localizer's learning rate is the authors' script's for the data set (rotated 1, placement ×0.1)."""

    LEGACY_TRAIN_FIELDS = {"train_samples": "num_particles"}  # configs written before ``train``

    model: str = "gamma_pstn"
    data: str = "rotated_mnist"
    prior_scale: float = 0.5  # σ_p of the Gaussian P-STN (001 gives none for this task)
    spread_init: float = -3.0  # the β head's initial bias
    classifier: str | None = None  # the pretrain run's name under the run root; None: ``pretrain``'s default
    val_size: int = 1000  # validation images watched during training
    test_samples: int = 10
    data_root: str | None = None
    train_size: int | None = None  # smoke runs only
    test_size: int | None = None
    train: TrainConfig | dict = field(default_factory=dict)  # a dict: fields over localizer_training's defaults

    def __post_init__(self):
        if self.model not in LOCALIZER_MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(LOCALIZER_MODELS)}")
        if self.data not in LOCALIZATION_SETS:
            raise ValueError(f"unknown data {self.data!r}; valid: {', '.join(LOCALIZATION_SETS)}")
        if self.val_size < 1 or self.test_samples < 1:
            raise ValueError(f"val_size and test_samples must be at least 1, got {self.val_size}, {self.test_samples}")
        dim = get_layout(LOCALIZATION_SETS[self.data][1]).dim
        self.train = localizer_training(self.train, LOCALIZER_LR_MULT[self.data], 1 if self.model == "stn" else None,
                                        None if self.model == "gamma_pstn" else float(dim))

    @property
    def name(self) -> str:
        return "-".join([self.data, self.model, f"e{self.train.epochs}", f"seed{self.train.seed}",
                         *_smoke_suffix(self.train_size, self.test_size)])


def build_localizing_model(config: LocalizeConfig, classifier: torch.nn.Module) -> TransformClassifier:
    """STN, P-STN or Gamma P-STN with the authors' large localizer around a frozen ``classifier``."""
    layout = get_layout(LOCALIZATION_SETS[config.data][1])
    canvas = 96 if config.data == "placed_fashion_mnist" else None
    common = dict(layout=layout, output_size=(28, 28) if canvas else None)
    frozen = Frozen(classifier)
    if config.model == "stn":
        return STN(frozen, localizer=large_localizer(layout, probabilistic=False, canvas=canvas), **common)
    localizer = large_localizer(layout, probabilistic=True, spread_init=config.spread_init, canvas=canvas)
    if config.model == "pstn":
        return PSTN(frozen, localizer, NormalPrior(layout.identity_theta(), config.prior_scale), **common)
    return GammaPSTN(frozen, localizer, GammaPrior(layout.dim), **common)


def fit_localizer(run_dir: Path, config: LocalizeConfig | FailureConfig, model: nn.Module, data: DataSplits,
                  progress: bool | None) -> Trainer:
    """Fit ``model`` with ``config.train`` in ``run_dir``, resuming from its checkpoint if there is one."""
    trainer = Trainer(model, config.train)
    open_run(run_dir, asdict(config), trainer)
    trainer.fit(data.train, data.val, run_dir=run_dir, progress=progress)
    model.cpu()
    return trainer


def evaluate_localization(model: nn.Module, data: DataSplits, test_samples: int) -> dict:
    """Posterior predictive metrics, ε and the spread split on the test set; also returns the arrays
    the figures need (θ_true, μ, spread) under ``"arrays"``."""
    test = data.test
    metrics = classification_metrics(predict(model, test.images, test_samples), test.labels)
    model.eval()
    with torch.no_grad():
        outs = [model.localizer(x) for x in test.images.split(1000)]
    mu = torch.cat([o[0] for o in outs])
    errors = transformation_errors(test.theta, mu, model.layout)
    out = {**metrics, "epsilon": float(errors.mean())}
    spread = None
    if outs[0][1] is not None:
        spread = posterior_variance(model, torch.cat([o[1] for o in outs]))
        out["spread_by_error"] = spread_by_error(errors, spread).to_dict()
    out["arrays"] = {"theta_true": test.theta, "mu": mu, "spread": spread, "errors": errors}
    if model.output_size is not None:  # 001 Fig. 7: 8 canvases and what the classifier sees under one draw of θ each
        inputs = test.images[:8]
        with torch.no_grad():
            theta = model.localizer(inputs)[0] if not model.stochastic_predictions else _posterior_theta(model, inputs)
        out["arrays"].update(inputs=inputs, crops=model.transform(inputs, theta).clamp(0, 1))
    return out


def _posterior_theta(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """One draw of θ ~ q(θ|x) per image (``[B, D]``)."""
    return posterior_draws(model, images, 1)["theta"][0]


def run_localize(config: LocalizeConfig, run_root: Path, progress: bool | None = None) -> dict:
    start = time.perf_counter()
    classifier = load_classifier(run_root, BASE_OF[config.data], config.classifier)
    data = load_localization(config.data, config.data_root, val_size=config.val_size, test_size=config.test_size,
                             train_size=config.train_size)
    torch.manual_seed(config.train.seed)
    model = build_localizing_model(config, classifier)
    run_dir = Path(run_root) / config.name
    trainer = fit_localizer(run_dir, config, model, data, progress)
    result = evaluate_localization(model, data, 1 if config.model == "stn" else config.test_samples)
    arrays = result.pop("arrays")
    torch.save({k: v for k, v in arrays.items() if v is not None}, run_dir / "localization.pt")
    return run_record(config, start, {"test": result}, trainer)


def frozen_baseline(run_root: Path, data_name: str, classifier: str | None = None, data_root: str | os.PathLike | None = None,
                    test_size: int | None = None) -> dict:
    """The frozen classifier alone on the transformed test set (001: 41.2 % on rotated MNIST)."""
    classifier = load_classifier(run_root, BASE_OF[data_name], classifier)
    data = load_localization(data_name, data_root, val_size=1, test_size=test_size, train_size=1)
    model = CNN(Frozen(classifier))
    return classification_metrics(predict(model, data.test.images, 1), data.test.labels)


#: nn_upright: the MLP alone on upright MNIST (001 Fig. 12, black); nn: alone on rotated MNIST (red);
#: stn / gamma_pstn: with a localizer, trained end to end on rotated MNIST (green / blue).
FAILURE_MODELS = ("nn_upright", "nn", "stn", "gamma_pstn")


@dataclass
class FailureConfig:
    """One run of 001 Fig. 12 (``UAI_rebuttal_rotmnist_modelsize*.sh``: 100 epochs, lr 1e-3, localizer lr
    ×0.1, S = 10, w = 3e-5, β head bias −3, seeds 0–4). Nothing is frozen here; the localizers are the
    MNIST-subset ones for one rotation angle (the scripts' are not recorded)."""

    LEGACY_TRAIN_FIELDS = {"train_samples": "num_particles"}  # configs written before ``train``

    model: str = "stn"
    depth: int = 1
    width: int = 128
    dropout: float = 0.5
    spread_init: float = -3.0
    test_samples: int = 10
    data_root: str | None = None
    train_size: int | None = None  # smoke runs only
    test_size: int | None = None
    train: TrainConfig | dict = field(default_factory=dict)  # a dict: fields over localizer_training's defaults

    def __post_init__(self):
        if self.model not in FAILURE_MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(FAILURE_MODELS)}")
        if not 1 <= self.depth <= 10:
            raise ValueError(f"depth must be in 1..10, got {self.depth}")
        if self.test_samples < 1:
            raise ValueError(f"test_samples must be at least 1, got {self.test_samples}")
        self.train = localizer_training(self.train, 0.1, None if self.model == "gamma_pstn" else 1, None)

    @property
    def name(self) -> str:
        return "-".join(["failure", self.model, f"depth{self.depth}", f"e{self.train.epochs}", f"seed{self.train.seed}",
                         *_smoke_suffix(self.train_size, self.test_size)])


def _failure_data(config: FailureConfig) -> DataSplits:
    data = load_localization("rotated_mnist", config.data_root, val_size=1000, test_size=config.test_size,
                             train_size=config.train_size)
    if config.model == "nn_upright":
        upright = load_dataset("mnist", config.data_root, val_size=1000, test_size=config.test_size, normalize=False)
        data.train = ImageSet(upright.train.images[: config.train_size], upright.train.labels[: config.train_size])
        data.val, data.test = upright.val, upright.test
    return data


def _failure_model(config: FailureConfig) -> TransformClassifier:
    """The model of ``config``, initialised under its seed (as its single run and its stack member)."""
    torch.manual_seed(config.train.seed)
    classifier = MLPClassifier(config.depth, config.width, dropout=config.dropout)
    if config.model in ("nn", "nn_upright"):
        return CNN(classifier)
    if config.model == "stn":
        return STN(classifier, layout="rotation", localizer=mnist_stn_localizer("rotation"))
    return GammaPSTN(classifier, mnist_pstn_localizer("rotation", config.spread_init), GammaPrior(1), layout="rotation")


def _failure_test(config: FailureConfig, model: TransformClassifier, data: DataSplits) -> dict:
    """Test accuracy, and the variance of μ(x) over the test images (near 0: the localizer learned
    the identity, the failure mode)."""
    sampling = config.model == "gamma_pstn"
    test = classification_metrics(predict(model, data.test.images, config.test_samples if sampling else 1),
                                  data.test.labels)
    if model.localizer is not None:
        model.eval()
        with torch.no_grad():
            mu = torch.cat([model.localizer(x)[0] for x in data.test.images.split(1000)])
        test["mean_transformation_variance"] = float(mu.var())
    return test


def run_failure(config: FailureConfig, run_root: Path, progress: bool | None = None) -> dict:
    """Fit one (model, depth, seed) and measure it (:func:`_failure_test`)."""
    start = time.perf_counter()
    data, model = _failure_data(config), _failure_model(config)
    trainer = fit_localizer(Path(run_root) / config.name, config, model, data, progress)
    return run_record(config, start, {"test": _failure_test(config, model, data)}, trainer)


def run_failure_stack(configs: list[FailureConfig], run_root: Path, progress: bool | None = None) -> list[dict]:
    """Fit R runs of one (model, depth) that differ in seed as one stack (:func:`inference.stacked.fit_stack`)
    and measure each member as its single run is measured; each leaves its single run's directory, and
    its record the share, 1/R, of the stack's wall and training time (``stacked``: R)."""
    first = configs[0]
    if any(dataclasses.replace(c, train=dataclasses.replace(c.train, seed=0)) !=
           dataclasses.replace(first, train=dataclasses.replace(first.train, seed=0)) for c in configs):
        raise ValueError("the runs of a stack may differ only in their seed")
    start = time.perf_counter()
    data = _failure_data(first)
    run_root, described = Path(run_root), [asdict(c) for c in configs]
    trainer = fit_stack([_failure_model(c) for c in configs], [c.train for c in configs], described,
                        [run_root / c.name for c in configs], run_root / stack_dir_name([c.name for c in configs]),
                        [data.train] * len(configs), [data.val] * len(configs), resume=None, progress=progress)
    tests = [_failure_test(config, trainer.model.member(r), data) for r, config in enumerate(configs)]
    wall = (time.perf_counter() - start) / len(configs)
    return [{**run_record(config, start, {"test": test}), "train_seconds": history.train_seconds, "wall_seconds": wall,
             "stacked": len(configs)} for config, test, history in zip(configs, tests, trainer.member_histories)]
