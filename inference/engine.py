"""The SVI engine: an ELBO loss module, plain torch Adam, KL weight and annealing, checkpoints.

One optimisation step minimises  loss = −ELBO(x, y) / B : the authors' per-example mean of
NLL + w·KL (the model converts w: :meth:`~pyro_pstn.models.TransformClassifier.pyro_kl_weight`).
Data is any torch ``Dataset`` of ``(x, y)`` pairs, drawn through a DataLoader
(:mod:`inference.loading`).
"""
from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pyro
import torch
import torch.nn as nn
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .batchnorm import recompute_batch_norm
from .loading import batches, check_dataset
from .metrics import classification_metrics
from .predictive import predict
from .runs import save_atomic
from .schedules import AnnealingSchedule

ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """How a model is fitted. Defaults: the authors' UAI MNIST-subset protocol (anchors.md §1.6)."""

    epochs: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    localizer_lr_mult: float = 0.1  # the localizer's lr is lr × this (a torch param group)
    weight_decay: float = 0.01  # coupled L2 as in torch.optim.Adam (not AdamW), as the authors used
    optimizer: str = "adam"  # "adam" (the P-STN authors') or "adamw" (decoupled weight decay; paper 003)
    elbo: str = "trace"  # "trace" (Trace_ELBO) or "meanfield" (TraceMeanField_ELBO, analytic KLs)
    num_particles: int = 1  # S training samples, vectorised
    kl_weight: float = 0.0  # the authors' per-dimension w; the model converts it (pyro_kl_weight)
    annealing: str = "constant"
    warmup_epochs: float = 0.0  # for annealing="linear"
    cycles: int = 4  # for annealing="cyclic"
    val_every: int = 10  # validate every this many epochs (and after the last)
    checkpoint_every: int = 10  # write a resumable checkpoint every this many epochs (and after the last)
    seed: int = 42
    device: str = "cpu"
    # After the last epoch, replace the BatchNorm running statistics by the training split's under
    # the fitted weights (precise BN, inference/batchnorm.py): the running averages of small
    # batches can leave a well-fitted network useless in eval mode. No effect without BN layers.
    precise_bn: bool = True
    # Pyro's and torch.distributions' argument checks inside training steps. They cost about a
    # quarter of a batch-8 step on CPU; the data are checked once in fit() instead. Turn on to
    # debug a new model.
    validate_args: bool = False
    # torch's intra-op CPU threads while fitting; None: chosen by the engine (:func:`choose_threads`).
    threads: int | None = None

    def __post_init__(self):
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown ELBO {self.elbo!r}; valid: {', '.join(ELBOS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1 (or None: chosen by the engine), got {self.threads}")
        for name in ("epochs", "batch_size", "num_particles", "val_every", "checkpoint_every", "cycles"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "localizer_lr_mult", "weight_decay", "kl_weight", "warmup_epochs"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value}")
        AnnealingSchedule(self.annealing)  # validates the name


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N', with a clear error where CUDA is absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but this torch build sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def choose_threads(config: TrainConfig) -> int:
    """torch's intra-op threads for a fit: ``config.threads`` if set, else 1.

    The papers' steps (batches of 8–64 small images or series, networks of 10⁴–10⁶ parameters) gain
    little from intra-op parallelism and lose much when the cores are shared: on this project's
    2-core machine a second thread saved 11 % of a batch-8 step when idle, nothing beside two
    CPU-bound processes, and made a batch-256 step 11× slower there
    (``experiments/results/threads_bench.md``, ``python -m experiments.bench --threads 1,2``). Pass
    more (``--threads N``) for a large-batch fit on an idle machine.
    """
    return config.threads if config.threads is not None else 1


#: How many times worse than its start (or than a uniform guess) a fit must end to count as diverged.
DIVERGED_RATIO = 10.0


@dataclass
class EpochRecord:
    epoch: int
    step: int
    loss: float
    kl_factor: float
    seconds: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_nll: float | None = None


@dataclass
class History:
    records: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0

    def last_validation(self) -> EpochRecord | None:
        return next((r for r in reversed(self.records) if r.val_loss is not None), None)

    def divergence(self, num_classes: int | None = None) -> str | None:
        """Why the fit looks diverged, or None. Non-finite losses stop a fit as they happen; this
        catches the finite explosions: the last epoch's loss at least ``DIVERGED_RATIO`` × the first
        epoch's, or (classifiers of ``num_classes``) a validation NLL at least ``DIVERGED_RATIO`` ×
        that of a uniform guess, log K."""
        if not self.records:
            return None
        first, last = self.records[0].loss, self.records[-1].loss
        if first > 0 and last >= DIVERGED_RATIO * first and last > 1:
            return f"the training loss grew from {first:.4g} in epoch 1 to {last:.4g} in epoch {self.records[-1].epoch}"
        val = self.last_validation()
        if num_classes and val is not None and val.val_nll is not None:
            uniform = math.log(num_classes)
            if val.val_nll >= DIVERGED_RATIO * uniform:
                return (f"the validation NLL is {val.val_nll:.4g}, {val.val_nll / uniform:.0f}× that of a uniform guess "
                        f"over {num_classes} classes (log K = {uniform:.3f})")
        return None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The state a :class:`Trainer` saved at ``path``, or a ValueError that names the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: nothing to resume or load; fit the run first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except PermissionError:
        raise ValueError(f"{path}: permission denied; make it readable (chmod u+r) and try again") from None
    except Exception as err:  # a damaged file raises anything from EOFError to UnpicklingError or ValueError
        raise ValueError(f"{path} cannot be read as a checkpoint ({type(err).__name__}: {err}): the file is truncated "
                         f"or corrupt. Delete its run directory and fit again, or restore {path.name}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path} is not a checkpoint of this library (no 'model' state in it): delete its run "
                         "directory and fit again")
    return state



def restore(model: nn.Module, checkpoint: str | os.PathLike) -> torch.nn.Module:
    """``model`` with the fitted parameters of a run's ``checkpoint.pt``, in eval mode."""
    model.load_state_dict(read_checkpoint(checkpoint)["model"])
    return model.eval()

@torch.no_grad()
def validate(model: nn.Module, elbo: nn.Module, val: Dataset, batch_size: int = 500, **schedule) -> dict[str, float]:
    """The loss (−ELBO per example) of ``model`` on ``val`` under the loss module ``elbo`` (with the
    ``schedule`` arguments of training) and, for classifiers, the one-sample predictive's metrics;
    no gradients, the model in eval mode."""
    device = next(model.parameters()).device
    model.eval()
    try:
        total = sum(float(elbo(x, y, **schedule)) for x, y in batches(val, batch_size, device))
        metrics = {}
        if getattr(model, "classifies", False):  # after the loss, as the random draws always came
            pairs = [(predict(model, x, num_samples=1, batch_size=batch_size), y.cpu())
                     for x, y in batches(val, batch_size, device)]
            metrics = classification_metrics(torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs]))
    finally:
        model.train()
    if math.isnan(total):
        raise ValueError("the validation loss is NaN: the model diverged (a NaN θ, weight or loss). Lower the learning "
                         "rate or the KL weight, and check the data for extreme values")
    return {"loss": total / len(val), **metrics}


def model_kl_weight(model: nn.Module, w: float) -> float:
    """The weight on Pyro's summed KL for the config's w, as the model converts it (P-STN
    classifiers: the authors' per-dimension w; VAEs and flow_pstn's α: w itself)."""
    convert = getattr(model, "pyro_kl_weight", None)
    return convert(w) if convert is not None else w


def accepted_keywords(*functions) -> frozenset[str] | None:
    """The keyword arguments that every one of ``functions`` (a model and its guide) accepts;
    None where all take ``**kwargs``. A model without a ``kl_weight`` argument has no KL weight."""
    accepted = None
    for fn in functions:
        params = inspect.signature(fn).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            continue
        names = frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        accepted = names if accepted is None else accepted & names
    return accepted


def parameter_groups(model: nn.Module, lr: float, localizer_lr_mult: float) -> list[dict]:
    """torch parameter groups: the localizer's parameters (what the model names in
    ``localizer_parameters()``, if it does) at ``lr × localizer_lr_mult``, those it names in
    ``undecayed_parameters()`` (Augerino's ranges) without weight decay, the rest at ``lr``."""
    def named(method: str) -> list[nn.Parameter]:
        listed = getattr(model, method, None)
        return list(listed()) if listed is not None else []

    localizer, undecayed = named("localizer_parameters"), named("undecayed_parameters")
    special = {id(p) for p in localizer + undecayed}
    groups = [{"params": [p for p in model.parameters() if id(p) not in special], "lr": lr}]
    if localizer:
        groups.append({"params": localizer, "lr": lr * localizer_lr_mult})
    if undecayed:
        groups.append({"params": undecayed, "lr": lr, "weight_decay": 0.0})
    return groups


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of ``n`` training examples in ``epoch`` of a run with ``seed`` (its own generator,
    independent of the draws of training, so a resumed run and a stack member repeat it)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


#: Called before every optimisation step with the trainer: a schedule that returns arguments for
#: model and guide (a Gumbel-softmax temperature, ``augment``, a controller's KL weight) from
#: ``trainer.step``, ``trainer.epoch`` or ``trainer.loss_args``; or None.
StepHook = Callable[["Trainer"], dict | None]


class Trainer:
    """Fits a :class:`TransformClassifier` (or any PyroModule with ``model(x, y)`` / ``guide(x, y)``,
    such as the pose VAEs) by SVI.

    >>> trainer = Trainer(model, TrainConfig(epochs=10, kl_weight=1e-3))
    >>> history = trainer.fit(data.train, data.val, run_dir="runs/example")
    """

    #: The model's plates: ``data`` (a stack adds ``members`` outside it).
    max_plate_nesting = 1
    #: The ELBO of each ``TrainConfig.elbo`` (a stack's are member by member).
    elbos = ELBOS

    def __init__(self, model: nn.Module, config: TrainConfig, step_hooks: tuple[StepHook, ...] = ()):
        # Pyro's modern style: parameters live in the modules (and the torch optimiser), not in
        # the global param store. A process-wide Pyro setting, set here for every fit.
        pyro.settings.set(module_local_params=True)
        torch.set_num_threads(choose_threads(config))  # process-wide too: the fit's work decides
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.kl_weight = model_kl_weight(model, config.kl_weight)
        self.step_hooks = tuple(step_hooks)
        elbo = self.elbos[config.elbo](
            num_particles=config.num_particles, vectorize_particles=config.num_particles > 1,
            max_plate_nesting=self.max_plate_nesting,
        )
        self.elbo = elbo(model.model, model.guide)  # a loss module: elbo(x, y) is −ELBO
        groups = parameter_groups(model, config.lr, config.localizer_lr_mult)
        self.optimizer = OPTIMIZERS[config.optimizer](groups, lr=config.lr, weight_decay=config.weight_decay)
        self.epoch = 0
        self.step = 0
        self.history = History()
        self._check_batches = False  # whether each drawn batch is checked for NaN (datasets not checked whole)
        #: The schedule's arguments at the last step (validation and precise BN use them too).
        self.loss_args: dict = {"kl_weight": self.kl_weight}
        self._accepted = accepted_keywords(model.model, model.guide)

    # ---- one step ------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor, **schedule) -> torch.Tensor:
        """−ELBO / B: the per-example loss the authors minimise; ``schedule`` (the KL weight, a
        temperature, ...) goes to model and guide as keyword arguments."""
        return self.elbo(x, y, **self.accepted(schedule)) / x.shape[0]

    def accepted(self, schedule: dict) -> dict:
        """The arguments of ``schedule`` that model and guide take (:func:`accepted_keywords`)."""
        return schedule if self._accepted is None else {k: v for k, v in schedule.items() if k in self._accepted}

    def schedule(self, kl_factor: float = 1.0) -> dict:
        """This step's arguments of model and guide: ``kl_weight`` (the converted w times the
        annealing factor), then what each step hook returns (a temperature, ``augment``, a
        controller's α), each hook seeing the arguments so far in :attr:`loss_args`."""
        self.loss_args = {"kl_weight": self.kl_weight * kl_factor}
        for hook in self.step_hooks:
            self.loss_args = {**self.loss_args, **(hook(self) or {})}
        return self.loss_args

    def train_step(self, x: torch.Tensor, y: torch.Tensor, kl_factor: float = 1.0) -> torch.Tensor:
        """One optimisation step; returns the detached loss (no device sync)."""
        schedule = self.schedule(kl_factor)
        self.optimizer.zero_grad(set_to_none=True)
        with pyro.validation_enabled(self.config.validate_args):
            loss = self.loss(x, y, **schedule)
            loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.detach()

    # ---- epochs --------------------------------------------------------------------------
    def _annealing(self, steps_per_epoch: int) -> AnnealingSchedule:
        c = self.config
        return AnnealingSchedule(
            c.annealing, c.epochs * steps_per_epoch, round(c.warmup_epochs * steps_per_epoch), c.cycles
        )

    def epoch_order(self, n: int) -> torch.Tensor:
        """The examples this process trains on this epoch, in order: fixed by (seed, epoch), so a
        resumed run repeats it."""
        return epoch_order(self.config.seed, self.epoch, n)

    def mean_loss(self, total: torch.Tensor, count: int) -> float:
        """The epoch's mean training loss from this process's sum over ``count`` examples."""
        return float(total) / count

    def train_epoch(self, train: Dataset) -> tuple[float, float]:
        """One pass over ``train`` in the order of :meth:`epoch_order`."""
        c = self.config
        self.model.train()
        order = self.epoch_order(len(train))
        annealing = self._annealing(math.ceil(len(order) / c.batch_size))
        total, factor = torch.zeros((), device=self.device), 1.0
        for x, y in batches(train, c.batch_size, self.device, order, check=self._check_batches):
            factor = annealing(self.step)
            total += self.train_step(x, y, factor) * len(y)
        return self.mean_loss(total, len(order)), factor

    def recompute_batch_norm(self, train: Dataset) -> int:
        """Precise BN over ``train`` (:func:`inference.batchnorm.recompute_batch_norm`) with draws
        of the training objective's guide; returns the number of BN layers."""
        return recompute_batch_norm(self.model, lambda x, y: self.elbo(x, y, **self.accepted(self.loss_args)), train)

    def validate(self, val: Dataset, batch_size: int = 500) -> dict[str, float]:
        """No-grad validation: the loss (−ELBO per example) and, for classifiers, the one-sample
        predictive's metrics."""
        return validate(self.model, self.elbo, val, batch_size, **self.accepted(self.loss_args))

    def prepare(self, train: Dataset, val: Dataset | None) -> tuple[Dataset, Dataset | None]:
        """Check the data once (steps run without argument checks): a ValueError that says what is
        wrong (:func:`inference.loading.check_dataset`). Batches go to the device as they are drawn."""
        full = [check_dataset(self.model, train, "training")]
        if val is not None:
            full.append(check_dataset(self.model, val, "validation"))
        self._check_batches = not all(full)
        return train, val

    def run_epoch(self, train: Dataset, val: Dataset) -> EpochRecord:
        """One epoch of training, and validation when it is due."""
        c = self.config
        start = time.perf_counter()
        loss, factor = self.train_epoch(train)
        if not math.isfinite(loss):
            raise ValueError(f"training diverged in epoch {self.epoch + 1}: the mean loss is {loss} (a NaN or infinite "
                             "θ, weight or loss). Lower the learning rate or the KL weight, check the data for extreme "
                             "values, or check a custom network's output; the last checkpoint is before this epoch")
        self.epoch += 1
        if c.precise_bn and self.epoch == c.epochs:  # before the last validation and checkpoint
            self.recompute_batch_norm(train)
        seconds = time.perf_counter() - start
        self.history.train_seconds += seconds
        record = EpochRecord(self.epoch, self.step, loss, factor, seconds)
        if val is not None and (self.epoch % c.val_every == 0 or self.epoch == c.epochs):
            v = self.validate(val)
            record.val_loss, record.val_accuracy, record.val_nll = v["loss"], v.get("accuracy"), v.get("nll")
        self.history.records.append(record)
        return record

    def fit(
        self,
        train: Dataset,
        val: Dataset | None = None,
        run_dir: str | os.PathLike | None = None,
        progress: bool | None = None,
        on_epoch_end: Callable[["Trainer", EpochRecord], None] | None = None,
    ) -> History:
        """Train until ``config.epochs`` (continuing from :meth:`load_checkpoint` if called) on any
        torch ``Dataset`` of ``(x, y)`` pairs (an :class:`~pyro_pstn.data.ImageSet`, a
        ``TensorDataset``, your own).

        ``progress=None`` shows a bar only on a terminal. ``on_epoch_end`` is called after each
        epoch's validation and checkpoint.
        """
        c = self.config
        train, val = self.prepare(train, val)
        if self.epoch == 0:
            self.seed_rng()
        bar = tqdm(total=c.epochs, initial=self.epoch, desc="fit", unit="epoch", disable=None if progress is None else not progress)
        try:
            while self.epoch < c.epochs:
                record = self.run_epoch(train, val)
                loss = record.loss
                if run_dir is not None and (self.epoch % c.checkpoint_every == 0 or self.epoch == c.epochs):
                    self.save_checkpoint(Path(run_dir) / CHECKPOINT)
                bar.update(1)
                last_val = self.history.last_validation()
                shown = {"loss": f"{loss:.4f}"}
                if last_val is not None:
                    shown["val"] = f"{last_val.val_accuracy:.3f}" if last_val.val_accuracy is not None else f"{last_val.val_loss:.2f}"
                bar.set_postfix(shown)
                if on_epoch_end is not None:
                    on_epoch_end(self, record)
        finally:
            bar.close()
        return self.history

    # ---- random state and checkpoints ----------------------------------------------------
    def seed_rng(self) -> None:
        """Seed the random draws of training (batch orders are seeded separately, by epoch)."""
        pyro.set_rng_seed(self.config.seed)

    def rng_state(self) -> dict:
        """This process's generators: torch, numpy and python (Pyro's), and CUDA's where used."""
        state = {"pyro": pyro.util.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_rng_state(self, state: dict) -> None:
        pyro.util.set_rng_state(state["pyro"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def state_dict(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": {"records": [asdict(r) for r in self.history.records], "train_seconds": self.history.train_seconds},
            "train_config": asdict(self.config),
            "rng": self.rng_state(),
            # stateful hooks (a PID controller and its log) resume with the run
            "hooks": [hook.state_dict() if hasattr(hook, "state_dict") else None for hook in self.step_hooks],
        }
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history = History([EpochRecord(**r) for r in state["history"]["records"]], state["history"]["train_seconds"])
        self.set_rng_state(state["rng"])
        for hook, hook_state in zip(self.step_hooks, state.get("hooks", [])):
            if hook_state is not None and hasattr(hook, "load_state_dict"):
                hook.load_state_dict(hook_state)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        save_atomic(self.state_dict(), path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        self.restore(read_checkpoint(path), path)

    def resume(self, path: str | os.PathLike) -> bool:
        """Continue from the checkpoint at ``path`` if there is one (a run stopped before its first
        checkpoint starts from the beginning); whether there was."""
        if not self.has_checkpoint(path):
            return False
        self.load_checkpoint(path)
        return True

    def has_checkpoint(self, path: str | os.PathLike) -> bool:
        return Path(path).is_file()

    def restore(self, state: dict, path: str | os.PathLike) -> None:
        """Continue from ``state``, read from the checkpoint ``path`` (named in the errors)."""
        if "optimizer" not in state:
            raise ValueError(f"{path} holds a stack member's model and history but no optimiser state: it trained "
                             "as part of a stack; resume the stack's directory (the one with stack.json) instead")
        try:
            self.load_state_dict(state)
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"{path} does not fit this model and configuration ({type(err).__name__}: {err}); "
                             "was the run directory's config.json changed? Fit again in a new directory") from None
