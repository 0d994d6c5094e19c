"""One way to open any run directory, whichever command made it::

    from inference.kinds import load_run
    run = load_run("runs/gamma_pstn-mnist30-fold0-seed42-20261207-101500")
    run.config, run.model, run.data, run.metrics

A run directory holds ``config.json`` and ``checkpoint.pt``; the config's fields say which kind of
run it is (a classifier of ``experiments.fit``, a pose VAE, a flow_pstn study run, a localizer in
front of a frozen classifier, or that pretrained classifier). The model comes back on the CPU in
eval mode, its data on first use.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyro
import torch.nn as nn
from tqdm.auto import tqdm

from pyro_pstn.data import load_dataset
from pyro_pstn.data.localization import load_localization
from pyro_pstn.models import CNN
from pyro_pstn.nets import mnist_cnn_classifier

from . import flow_runs, localizer_runs, pose_vae_runs
from .engine import CHECKPOINT, Trainer, restore
from .fitting import CONFIG_FILE, METRICS_FILE, evaluate, model_from_config
from .runs import write_json
from .spec import FitConfig, config_from_dict, nest_training, read_config, read_json


@dataclass(frozen=True)
class RunKind:
    """A kind of run directory: its config class, the untrained model of a config (with the data
    where building it needed them, else None), the data it was fitted on, and the command that makes one."""

    config: type
    build: Callable[[object], tuple[nn.Module, object]]
    data: Callable[[object], object]
    command: str


def _fit_data(config: FitConfig):
    return load_dataset(config.data, config.data_root, config.fold, config.val_size, config.test_size)


def _localize_data(config: localizer_runs.LocalizeConfig):
    return load_localization(config.data, config.data_root, val_size=1, test_size=config.test_size, train_size=1)


KINDS = {
    "fit": RunKind(FitConfig, lambda c: (model_from_config(c, c.data_spec()), None), _fit_data,
                   "python -m experiments.fit"),
    "pose_vae": RunKind(pose_vae_runs.PoseVAEConfig, lambda c: (pose_vae_runs.build_model(c), None),
                        pose_vae_runs.load_sets,
                        "python -m experiments.pose_vae fit"),
    "flow": RunKind(flow_runs.FlowConfig, flow_runs.model_and_data, flow_runs.load_data,
                    "python -m experiments.flow fit"),
    "localize": RunKind(localizer_runs.LocalizeConfig,
                        lambda c: (localizer_runs.build_localizing_model(c, mnist_cnn_classifier()), None),
                        _localize_data, "python -m experiments.localize fit"),
    "pretrain": RunKind(localizer_runs.PretrainConfig, lambda c: (CNN(mnist_cnn_classifier()), None),
                        lambda c: load_dataset(c.data, c.data_root, val_size=None, normalize=False),
                        "python -m experiments.localize pretrain"),
}


def kind_of(config: dict) -> str:
    """The kind whose config class has every key of ``config`` (the one with the fewest fields), in the
    current format or an earlier one."""
    fits = [(len(dataclasses.fields(k.config)), name) for name, k in KINDS.items()
            if set(nest_training(k.config, config)) <= {f.name for f in dataclasses.fields(k.config)}]
    if not fits:
        raise ValueError(f"config keys {sorted(config)[:8]}… match no kind of run ({', '.join(KINDS)})")
    return min(fits)[1]


@dataclass
class FittedRun:
    """A fitted run: its kind, typed config, model (CPU, eval mode), metrics (None where the command
    keeps none in the directory) and, on first use, its data."""

    directory: Path
    kind: str
    config: object
    model: nn.Module
    metrics: dict | None = field(default=None, repr=False)
    loaded: object = field(default=None, repr=False)  # the data, once loaded

    @property
    def data(self) -> object:
        if self.loaded is None:
            self.loaded = KINDS[self.kind].data(self.config)
        return self.loaded


def load_run(run_dir: str | Path) -> FittedRun:
    """The run in ``run_dir``, whichever command fitted it, or a ValueError that says what is missing."""
    run_dir = Path(run_dir)
    if (run_dir / "stack.json").is_file():
        raise ValueError(f"{run_dir} is a stack's directory: open one of its members (their directories are listed "
                         "in its stack.json)")
    if not (run_dir / CONFIG_FILE).is_file():
        raise ValueError(f"{run_dir} holds no {CONFIG_FILE}: not a run directory (commands: "
                         f"{', '.join(k.command for k in KINDS.values())})")
    raw = read_json(run_dir / CONFIG_FILE)
    name = kind_of(raw)
    kind = KINDS[name]
    config = read_config(kind.config, run_dir / CONFIG_FILE, raw)
    if not (run_dir / CHECKPOINT).is_file():
        raise ValueError(f"{run_dir} has no {CHECKPOINT} yet: finish it with `{kind.command}` (or its --resume)")
    config.train.device = "cpu"
    model, data = kind.build(config)
    model = restore(model, run_dir / CHECKPOINT)
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return FittedRun(run_dir, name, config, model, metrics, data)


def evaluate_precise_bn(run_dir: str | Path) -> dict | None:
    """A finished run of ``experiments.fit`` evaluated again as it was (no figures, the directory left
    as it is), with its networks' batch-norm statistics first recomputed over its training split
    (precise BN, :mod:`inference.batchnorm`); None when its networks have no batch norm. For runs
    fitted with ``precise_bn=False``, whose eval-mode networks used the running averages of training."""
    run = load_run(run_dir)
    pyro.set_rng_seed(run.config.train.seed)  # the draws of θ below and in evaluate
    if not Trainer(run.model, run.config.train).recompute_batch_norm(run.data.train):
        return None
    return evaluate(run.model.eval(), run.data, run.config, None)


# ---- result records evaluated with precise BN ---------------------------------------------------


def has_precise_bn(record: dict) -> bool:
    """Whether a sweep's result record has metrics with precise BN (:mod:`inference.batchnorm`): fitted
    with it, or evaluated again from its checkpoint (:func:`recompute_precise_bn`; kept under ``precise_bn``)."""
    return "precise_bn" in record or record.get("config", {}).get("train", {}).get("precise_bn", False)


def as_evaluated(record: dict, precise: bool) -> dict:
    """The metrics of a result record (``test`` / ``val``, ``test_at_mean``) with precise BN or as fitted."""
    return record["precise_bn"] if precise and "precise_bn" in record else record


def _fitted_config(config: dict) -> dict:
    """A stored config read back through FitConfig, with a run from before precise BN (no such field)
    read as fitted without it (the field's default is on)."""
    config = {**config, "train": {"precise_bn": False, **config["train"]}}
    return dataclasses.asdict(config_from_dict(FitConfig, config))


def recompute_precise_bn(result_files: list[Path], run_root: str | Path, report: Callable[[str], None] = print) -> None:
    """Each result record of ``result_files`` fitted with training's running BN averages evaluated again
    with precise BN (:func:`evaluate_precise_bn`) from its checkpoint under ``run_root`` (the run
    directory named as the file); the metrics go into the record under ``precise_bn``, next to (not
    over) the ones it was fitted with. A run whose checkpoint is missing or of another config is named."""
    todo, missing = [], []
    for path in result_files:
        record = json.loads(path.read_text())
        if has_precise_bn(record):
            continue  # done, or fitted with precise BN already
        run_dir = Path(run_root) / path.stem
        try:  # the checkpoint must be this result's run (same config), not a later refit's
            same = _fitted_config(json.loads((run_dir / CONFIG_FILE).read_text())) == _fitted_config(record["config"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            same = False
        (todo if same and (run_dir / CHECKPOINT).is_file() else missing).append((path, record, run_dir))
    if missing:
        report(f"{len(missing)} run(s) without their checkpoint under {run_root} (fitted on another machine, or "
               f"refitted since) cannot be evaluated again: {', '.join(p.stem for p, _, _ in missing)}")
    for path, record, run_dir in tqdm(todo, desc="precise BN", unit="run", disable=None):
        start = time.perf_counter()
        metrics = evaluate_precise_bn(run_dir)
        if metrics is None:  # no batch norm: the run's own numbers are already exact
            continue
        name = record["evaluated_on"]
        record["precise_bn"] = {name: metrics[name], f"{name}_at_mean": metrics.get(f"{name}_at_mean"),
                                "seconds": time.perf_counter() - start,
                                "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_json(path, record)
        report(f"{path.name}: {name} accuracy {record[name]['accuracy']:.4f} with running BN averages, "
               f"{metrics[name]['accuracy']:.4f} with precise BN")
