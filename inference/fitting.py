"""Fitting one run of a :class:`~inference.spec.FitConfig` and what it leaves: the run directory.

:func:`run_fit` fits (or resumes) one run, :func:`run_fit_stack` R runs of one model as one stack
(:mod:`inference.stacked`), each leaving exactly a single run's directory: ``config.json``,
``checkpoint.pt``, ``metrics.json``, ``reliability.png``, ``augmentations.png`` and ``posterior.nc``
(ArviZ). Under torchrun the fit is data-parallel (:mod:`inference.distributed`).
"""
from __future__ import annotations

import json
import platform
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pyro
import torch

from pyro_pstn.data import DataSpec, DataSplits, load_dataset
from pyro_pstn.models import TransformClassifier, build_model

from . import distributed
from .distributed import DistributedTrainer
from .engine import CHECKPOINT, History, Trainer
from .metrics import classification_metrics, reliability_bins
from .predictive import posterior_draws, predict, predict_at_mean
from .runs import locked, write_atomic
from .spec import FitConfig, config_from_dict
from .stacked import STACK_FILE, fit_stack

CONFIG_FILE, METRICS_FILE, POSTERIOR_FILE = "config.json", "metrics.json", "posterior.nc"


def model_from_config(config: FitConfig, spec: DataSpec) -> TransformClassifier:
    """The (untrained) model of ``config`` for data of ``spec``; warps fill with the data's
    background (or 0 in normalised units with ``fill="zero"``, as the authors' code)."""
    return build_model(
        config.model,
        spec,
        layout=config.layout,
        prior_scale=config.prior_scale,
        fill=None if config.fill == "background" else 0.0,
        align_corners=config.align_corners,
        spread_init=config.spread_init,
        gamma_concentration=config.gamma_concentration,
        gamma_rate=config.gamma_rate,
    )


def build(config: FitConfig, download: bool = False) -> tuple[DataSplits, TransformClassifier]:
    """Load the data and build the model of ``config`` (raises DataError / ValueError on bad input);
    the data's spec and source are recorded in ``config``."""
    data = load_dataset(config.data, config.data_root, config.fold, config.val_size, config.test_size, download)
    config.record_data(data.spec.to_dict(), data.source)
    return data, model_from_config(config, data.spec)


def evaluate(model: TransformClassifier, data: DataSplits, config: FitConfig, run_dir: Path | None) -> dict:
    """Posterior predictive metrics on the test set (or the validation set, for model selection);
    figures and the posterior file into ``run_dir``."""
    name = config.evaluate_on
    split = data.test if name == "test" else data.val
    start = time.perf_counter()
    log_probs = predict(model, split.images, num_samples=config.test_samples)
    metrics = classification_metrics(log_probs, split.labels)
    bins = reliability_bins(log_probs, split.labels)
    seconds = time.perf_counter() - start
    spread, at_mean = {}, {}
    if model.predicts_at_mean:  # the classifier at the posterior location μ(x), no draws of θ:
        # set against the BMA above, it tells what test-time averaging over q(θ|x) adds or costs
        at_mean = {f"{name}_at_mean": classification_metrics(predict_at_mean(model, split.images), split.labels)}
    if run_dir is not None:
        from .plots import augmentation_grid, reliability_diagram  # matplotlib: only where figures are drawn

        title = f"{config.model} on {config.data} (fold {config.fold}, {name})"
        reliability_diagram(bins, run_dir / "reliability.png", title, metrics["ece"])
        if model.latent_sites:
            from .posterior import save_inference_data, to_inference_data  # ArviZ

            k = min(config.posterior_images, len(split))
            images, labels = split.images[:k], split.labels[:k]
            draws = posterior_draws(model, images, config.posterior_draws)
            idata = to_inference_data(draws, model.layout, images, labels, range(k))
            save_inference_data(idata, run_dir / POSTERIOR_FILE)
            # how far the posterior spreads the transformation: std over draws, averaged over images and θ's dims
            spread = {"theta_posterior_std": draws["theta"].std(0).mean().item()}
            shown = draws["theta"][:8, :8]
            warped = model.transform(images[:8], shown)  # draws and images are on the CPU
            augmentation_grid(images[:8], warped, run_dir / "augmentations.png", title + ": posterior augmentations")
    return {name: metrics, f"n_{name}": len(split), "evaluated_on": name, "test_samples": config.test_samples,
            "reliability": bins.to_dict(), "eval_seconds": seconds, **at_mean, **spread, **model.learned()}


def run_fit(
    config: FitConfig,
    run_dir: str | Path,
    resume: bool = False,
    download: bool = False,
    progress: bool | None = None,
    on_epoch_end: Callable[..., object] | None = None,
) -> dict:
    """Fit (or resume) and evaluate; returns the metrics written to ``metrics.json``.

    The run directory is held (:func:`inference.runs.locked`) while the run trains: a second
    process given the same directory is refused, never trains it twice. ``resume`` continues from
    the last checkpoint, or, for a run stopped before its first checkpoint, starts it again.

    In a process group started by torchrun (:mod:`inference.distributed`) every process calls it;
    the fit is data-parallel, rank 0 writes the run directory and returns the metrics, the other
    ranks return None.
    """
    run_dir = Path(run_dir)
    pyro.set_rng_seed(config.train.seed)  # the networks' initial weights too
    data, model = build(config, download)  # everything that can fail on bad input happens first
    trainer = (DistributedTrainer if distributed.active() else Trainer)(model, config.train)
    main_process = getattr(trainer, "rank", 0) == 0
    with locked(run_dir) if main_process else nullcontext():
        if resume:
            trainer.resume(run_dir / CHECKPOINT)
        elif main_process:
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                raise ValueError(f"run directory {run_dir} already exists: pick another --run-name, or --resume it") from None
            write_atomic(run_dir / CONFIG_FILE, config.to_json())
        wall = time.perf_counter()
        history = trainer.fit(data.train, data.val, run_dir=run_dir, progress=progress, on_epoch_end=on_epoch_end)
        if not main_process:
            return None
        return finish_run(trainer.model, config, data, history, trainer.epoch, trainer.step, trainer.device, run_dir,
                          time.perf_counter() - wall, processes=getattr(trainer, "world_size", 1))


def finish_run(model: TransformClassifier, config: FitConfig, data: DataSplits, history: History, epoch: int, step: int,
               device: torch.device | str, run_dir: Path, wall_seconds: float, processes: int = 1) -> dict:
    """Evaluate a fitted run, write its ``metrics.json`` (and figures) and return the metrics.
    ``processes``: how many data-parallel processes trained it (global batch = processes × batch size)."""
    metrics = evaluate(model, data, config, run_dir)
    last_val = history.last_validation()
    metrics.update(
        {
            "model": config.model,
            "data": config.data,
            "fold": config.fold,
            "data_source": data.source,
            "n_train": len(data.train),
            "epochs": epoch,
            "steps": step,
            "train_seconds": history.train_seconds,
            "wall_seconds_this_process": wall_seconds,
            "final_train_loss": history.records[-1].loss,
            "diverged": history.divergence(data.spec.num_classes if model.classifies else None),
            "validation": asdict(last_val) if last_val else None,
            "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(device),
            "processes": processes,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.python_version()}",
            "torch": torch.__version__,
        }
    )
    write_atomic(run_dir / METRICS_FILE, json.dumps(metrics, indent=2))
    return metrics


def run_fit_stack(
    configs: list[FitConfig],
    run_dirs: list[str | Path],
    stack_dir: str | Path,
    resume: bool = False,
    download: bool = False,
    progress: bool | None = None,
    on_epoch_end: Callable[..., object] | None = None,
) -> list[dict]:
    """Fit R configs of one model as one stack (issue 12) and leave for each member exactly the run
    directory :func:`run_fit` leaves (config, checkpoint, metrics, figures, posterior).

    The members may differ in fold, seed, KL weight and prior (σ_p / σ_DA, α0 / β0); member r's
    networks start where its single run's start (initialised under its own seed). ``stack_dir``
    holds the stack's own checkpoint (``--resume`` continues from it). A member's checkpoint holds
    its model, epoch and history (not Adam's moments: a stack resumes from ``stack_dir``), and its
    ``train_seconds`` is its share, 1/R, of the stack's training time.
    """
    built = []
    for config in configs:
        pyro.set_rng_seed(config.train.seed)  # the member's initial weights are its single run's
        built.append(build(config, download))
    datas, models = zip(*built)
    wall = time.perf_counter()
    trainer = fit_stack(list(models), [c.train for c in configs], [asdict(c) for c in configs], run_dirs, stack_dir,
                        [d.train for d in datas], [d.val for d in datas], resume, progress, on_epoch_end)
    wall = (time.perf_counter() - wall) / len(configs)
    return [finish_run(trainer.model.member(r).eval(), config, data, trainer.member_histories[r], trainer.epoch,
                       trainer.step, trainer.device, Path(run_dir), wall)
            for r, (config, data, run_dir) in enumerate(zip(configs, datas, run_dirs))]


def read_stack(stack_dir: str | Path) -> tuple[list[FitConfig], list[str]]:
    """The members' configs and run directories of a stack directory (its ``stack.json``)."""
    path = Path(stack_dir) / STACK_FILE
    try:
        stack = json.loads(path.read_text())
        return [config_from_dict(FitConfig, c) for c in stack["configs"]], list(stack["run_dirs"])
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{path} cannot be read as a stack's description ({type(err).__name__}: {err}): restore it, "
                         "or delete the stack's directory and fit again") from None


def summary_table(metrics: dict, run_dir: Path) -> str:
    name = metrics["evaluated_on"]
    t = metrics[name]
    rows = [
        ("model", metrics["model"]),
        ("data", f"{metrics['data']} fold {metrics['fold']} ({metrics['n_train']} train, {metrics[f'n_{name}']} {name})"),
        ("epochs / steps", f"{metrics['epochs']} / {metrics['steps']}"),
        ("train time", f"{metrics['train_seconds']:.1f} s on {metrics['device']}"),
        (f"{name} accuracy", f"{t['accuracy']:.4f}"),
        (f"{name} NLL", f"{t['nll']:.4f}"),
        (f"{name} ECE (15 bins)", f"{t['ece']:.4f}"),
        (f"{name} Brier", f"{t['brier']:.4f}"),
    ]
    if "learned_width" in metrics:  # what a model with global ranges (Augerino) learned
        rows.append(("learned width ω", ", ".join(f"{k} {v:.3g}" for k, v in metrics["learned_width"].items())))
    rows.append(("run directory", str(run_dir)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
