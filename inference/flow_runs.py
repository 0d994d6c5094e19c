"""Fitting one flow_pstn (paper 004) and what it leaves: a run directory and a record.

:class:`FlowConfig` is the run spec; :func:`run_flow` fits (or resumes) it into
``<run_root>/<name>/`` (``config.json``, ``checkpoint.pt``, the entropy controller's per-step log
``control.csv`` and its plots) and returns its record: test metrics, the learned rotation range per
class, the final α and entropy, and the timing. :func:`fitted_flow` opens a finished one again.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pyro_pstn.data import MARIO_IGGY_SETS, DataSplits, ImageSet, load_dataset, mario_iggy
from pyro_pstn.flows import BASES, ConditionalTransformFlow
from pyro_pstn.models import Augerino, LearnedBox
from pyro_pstn.models.flow_pstn import AugmentationWarmup, FlowPSTN
from pyro_pstn.nets import SimpleConv
from pyro_pstn.transforms import LIE_LAYOUTS, get_layout

from .control import EntropyController, PIDController
from .engine import CHECKPOINT, TrainConfig, Trainer, read_checkpoint, restore
from .invariance import rotation_ranges
from .metrics import classification_metrics
from .plots import line_plot
from .predictive import predict
from .runs import open_run, run_record, write_atomic
from .spec import training

CONTROL_LOG = "control.csv"
EMBEDDING_DIM = 32
#: data name → (Mario-Iggy rotation range in degrees, number of modes); mnist01569 is separate.
FLOW_DATA = (*MARIO_IGGY_SETS, "mnist01569")


#: The models of paper 004's studies: the flow, and Augerino, the baseline it is compared with.
FLOW_MODELS = ("flow_pstn", "augerino")


@dataclass
class FlowConfig:
    """One fit of a 004 study. ``entropy_target`` (nats) turns the PID controller on; None keeps α
    fixed. ``model="augerino"``: Augerino with the same classifier and training, α its regulariser
    weight λ, fixed (the flow's fields, ``flow_layers`` … ``embedder_width`` and the warm-up, unused)."""

    data: str = "mario_iggy90"
    layout: str = "lie_rotation_translation"
    flow_layers: int = 4
    base: str = "gaussian"
    components: int = 1
    temperature: float = 0.5
    classifier_width: int = 8
    embedder_width: int = 8
    alpha: float = 0.1
    entropy_target: float | None = 2.0
    pid_kp: float = 0.01
    pid_ki: float = 0.01
    pid_kd: float = 0.0
    alpha_min: float = 1e-3
    alpha_max: float = 0.5
    no_aug_until: int = 5
    classifier_from: str | None = None  # a run directory whose classifier is loaded and frozen
    train_size: int | None = None
    test_samples: int = 10
    data_root: str | None = None
    # a dict: fields over the defaults (A.3.5: Adam lr 1e-3, batch 256, 100 epochs, seed 0); its KL
    # weight is α, the entropy weight the controller starts from
    train: TrainConfig | dict = field(default_factory=dict)
    model: str = "flow_pstn"

    def __post_init__(self):
        if self.model not in FLOW_MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(FLOW_MODELS)}")
        if self.model == "augerino" and self.entropy_target is not None:
            raise ValueError("Augerino's regulariser weight α is fixed: pass entropy_target=None (--fixed-alpha)")
        if self.data not in FLOW_DATA:
            raise ValueError(f"unknown data {self.data!r}; valid: {', '.join(FLOW_DATA)}")
        if self.layout not in LIE_LAYOUTS:
            raise ValueError(f"{self.model} needs a Lie layout (identity θ = 0, θ in [−1, 1]); got {self.layout!r}, "
                             f"valid: {', '.join(LIE_LAYOUTS)}")
        if self.base not in BASES:
            raise ValueError(f"unknown base {self.base!r}; valid: {', '.join(BASES)}")
        for name in ("flow_layers", "components", "classifier_width", "embedder_width", "test_samples"):
            if getattr(self, name) < (0 if name == "flow_layers" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.alpha_min <= self.alpha <= self.alpha_max:
            raise ValueError(f"need 0 ≤ alpha_min ≤ alpha ≤ alpha_max, got {self.alpha_min}, {self.alpha}, {self.alpha_max}")
        train = training(self.train, dict(epochs=100, batch_size=256, lr=1e-3, localizer_lr_mult=1.0, weight_decay=0.0,
                                          checkpoint_every=5, seed=0), val_every=lambda epochs: max(1, epochs // 5))
        self.train = dataclasses.replace(train, kl_weight=self.alpha)

    @property
    def name(self) -> str:
        control = f"H{self.entropy_target:g}" if self.entropy_target is not None else f"a{self.alpha:g}"
        transform = ["augerino"] if self.model == "augerino" else [f"L{self.flow_layers}", f"{self.base}{self.components}"]
        parts = [self.data, self.layout, *transform, control, f"c{self.classifier_width}", f"e{self.train.epochs}"]
        if self.classifier_from:
            parts.append("frozen-" + Path(self.classifier_from).name.split("-")[0])
        if self.train_size:
            parts.append(f"n{self.train_size}")
        if self.train.seed:
            parts.append(f"s{self.train.seed}")
        return "-".join(parts)


# ---- data and model ----------------------------------------------------------------------------


def load_data(config: FlowConfig) -> DataSplits:
    if config.data in MARIO_IGGY_SETS:
        rotation, modes = MARIO_IGGY_SETS[config.data]
        return mario_iggy(config.data_root, rotation, modes, train_size=config.train_size or 12000)
    data = load_dataset(config.data, config.data_root, val_size=1000, normalize=False)  # mnist01569
    data.train = ImageSet(data.train.images[: config.train_size], data.train.labels[: config.train_size])
    return data


def build_model(config: FlowConfig, channels: int, num_classes: int) -> FlowPSTN | Augerino:
    layout = get_layout(config.layout)
    classifier = SimpleConv(channels, num_classes, config.classifier_width)
    if config.model == "augerino":
        model = Augerino(classifier, LearnedBox(layout.dim), layout=layout, kl_weight=config.alpha)
    else:
        flow = ConditionalTransformFlow(layout.dim, EMBEDDING_DIM, config.flow_layers, base=config.base,
                                        num_components=config.components, temperature=config.temperature)
        model = FlowPSTN(classifier, SimpleConv(channels, EMBEDDING_DIM, config.embedder_width), flow, layout=layout,
                         kl_weight=config.alpha)
    if config.classifier_from is not None:
        if not (Path(config.classifier_from) / CHECKPOINT).exists():
            raise ValueError(f"--classifier-from {config.classifier_from}: no {CHECKPOINT} there; fit that run first")
        state = read_checkpoint(Path(config.classifier_from) / CHECKPOINT)["model"]
        try:
            model.classifier.load_state_dict({k.removeprefix("classifier."): v for k, v in state.items()
                                              if k.startswith("classifier.")})
        except RuntimeError as err:  # another network: a run of experiments.fit, or another width
            raise ValueError(f"--classifier-from {config.classifier_from}: its classifier does not fit this model's "
                             f"SimpleConv(width {config.classifier_width}) ({str(err).splitlines()[0]}). Pass a run "
                             "directory of experiments.flow with the same --classifier-width") from None
        model.classifier.requires_grad_(False)
    return model


def model_and_data(config: FlowConfig) -> tuple[FlowPSTN, DataSplits]:
    """The (untrained) model of ``config``, sized by its data's channels and classes, and that data."""
    data = load_data(config)
    return build_model(config, data.train.images.shape[1], data.num_classes), data


def fitted_flow(run_root: Path, config: FlowConfig) -> tuple[FlowPSTN, DataSplits]:
    """(fitted model on the CPU in eval mode, its data) of the finished run of ``config`` under ``run_root``."""
    run_dir = Path(run_root) / config.name
    if not (run_dir / CHECKPOINT).is_file():
        raise ValueError(f"{run_dir / CHECKPOINT} is missing: fit the run first (python -m experiments.flow fit ...)")
    model, data = model_and_data(config)
    return restore(model, run_dir / CHECKPOINT), data


# ---- one run -----------------------------------------------------------------------------------


def run_flow(config: FlowConfig, run_root: Path, progress: bool | None = None) -> dict:
    """Fit (or resume) ``config``; measure test accuracy / NLL / ECE and the learned rotation
    range per class; keep the controller's per-step log (step, α, entropy) as CSV and a plot."""
    start = time.perf_counter()
    run_dir = Path(run_root) / config.name
    model, data = model_and_data(config)
    pid = None
    if config.entropy_target is not None:
        pid = PIDController(config.entropy_target, config.pid_kp, config.pid_ki, config.pid_kd,
                            config.alpha_min, config.alpha_max)
    controller = EntropyController(pid)
    trainer = Trainer(model, config.train, step_hooks=(AugmentationWarmup(config.no_aug_until), controller))
    open_run(run_dir, asdict(config), trainer)
    trainer.fit(data.train, data.val, run_dir=run_dir, progress=progress)
    log = np.array([(s, a, np.nan if h is None else h) for s, a, h in controller.log])
    write_atomic(run_dir / CONTROL_LOG, "step,alpha,entropy\n" + "\n".join(f"{int(s)},{a:.6g},{h:.6g}" for s, a, h in log) + "\n")
    line_plot({"α": (log[:, 0].tolist(), log[:, 1].tolist())}, run_dir / "alpha.png", "step", "α", config.name,
              markers=False, logy=True)
    line_plot({"entropy": (log[:, 0].tolist(), log[:, 2].tolist())}, run_dir / "entropy.png", "step",
              "entropy of g(T | x), nats", config.name, markers=False)
    device = trainer.device
    test = classification_metrics(predict(model, data.test.images, num_samples=config.test_samples), data.test.labels)
    ranges = rotation_ranges(model, data.test.images, data.test.labels)
    model.cpu()
    entropy = log[-50:, 2][~np.isnan(log[-50:, 2])] if len(log) else []  # the last 50 steps that had one
    return run_record(config, start, {
        "data": {"name": data.name, "source": data.source, "train": len(data.train), "test": len(data.test)},
        "test": test,
        "rotation_range_deg": {"coverage": ranges["coverage"], "per_class": ranges["per_class"]},
        "final_alpha": float(log[-1, 1]) if len(log) else config.alpha,
        "final_entropy": float(np.mean(entropy)) if len(entropy) else None,  # None: no step was controlled
    }, trainer, str(device))
