"""Fit one model on one data set and leave a run directory.

    python -m experiments.fit --model gamma_pstn --data mnist30

Defaults are the authors' UAI MNIST-subset protocol (anchors.md §1.6): batch 8, 600 epochs,
Adam with the learning rate of each model, localizer lr × 0.1, coupled weight decay 0.01,
1 training / 10 test samples, the KL weight w of the subset size.

The run directory holds ``config.json``, ``checkpoint.pt`` (resumable with ``--resume``),
``metrics.json``, ``reliability.png``, ``augmentations.png`` and ``posterior.nc`` (ArviZ).
"""
from __future__ import annotations

import json
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import click
import pyro
import torch
from click.core import ParameterSource

from inference import distributed
from inference.distributed import DistributedTrainer
from inference.engine import CHECKPOINT, ELBOS, Trainer
from inference.metrics import classification_metrics, reliability_bins
from inference.predictive import posterior_draws, predict, predict_at_mean
from inference.runs import check_same_config, locked, save_atomic, write_atomic
from inference.schedules import ANNEALING
from pyro_pstn.data import DataSpec, DataSplits, dataset_names, is_dataset_name, load_dataset, unknown_dataset
from pyro_pstn.models import MODEL_NAMES, TransformClassifier, build_model
from pyro_pstn.transforms import CPAB_FAMILIES, LAYOUTS, TimeAffine

from .cli import CommaList, FloatRange, SafeCommand, device_option, writable_dir
from .config import FILLS, FitConfig, config_from_dict, read_config

CONFIG_FILE, METRICS_FILE, POSTERIOR_FILE = "config.json", "metrics.json", "posterior.nc"


class DataName(click.ParamType):
    """``--data``: a registered name, ``ucr/<Name>`` or a path; others list the valid ones."""

    name = "data"

    def convert(self, value, param, ctx):
        if is_dataset_name(value):
            return value
        self.fail(unknown_dataset(value), param, ctx)


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
        from inference.plots import augmentation_grid, reliability_diagram

        title = f"{config.model} on {config.data} (fold {config.fold}, {name})"
        reliability_diagram(bins, run_dir / "reliability.png", title, metrics["ece"])
        if model.latent_sites:
            from inference.posterior import save_inference_data, to_inference_data

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
            "reliability": bins.to_dict(), "eval_seconds": seconds, **at_mean, **spread}


def run_fit(
    config: FitConfig,
    run_dir: str | Path,
    resume: bool = False,
    download: bool = False,
    progress: bool | None = None,
    on_epoch_end=None,
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
        if resume and (run_dir / CHECKPOINT).is_file():
            trainer.load_checkpoint(run_dir / CHECKPOINT)
        elif main_process and not resume:
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


def finish_run(model: TransformClassifier, config: FitConfig, data: DataSplits, history, epoch: int, step: int,
               device, run_dir: Path, wall_seconds: float, processes: int = 1) -> dict:
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


STACK_FILE = "stack.json"


def run_fit_stack(
    configs: list[FitConfig],
    run_dirs: list[str | Path],
    stack_dir: str | Path,
    resume: bool = False,
    download: bool = False,
    progress: bool | None = None,
    on_epoch_end=None,
) -> list[dict]:
    """Fit R configs of one model as one stack (issue 12) and leave for each member exactly the run
    directory :func:`run_fit` leaves (config, checkpoint, metrics, figures, posterior).

    The members may differ in fold, seed, KL weight and prior (σ_p / σ_DA, α0 / β0); member r's
    networks start where its single run's start (initialised under its own seed). ``stack_dir``
    holds the stack's own checkpoint (``--resume`` continues from it). A member's checkpoint holds
    its model, epoch and history (not Adam's moments: a stack resumes from ``stack_dir``), and its
    ``train_seconds`` is its share, 1/R, of the stack's training time.
    """
    from inference.stacked import StackTrainer
    from pyro_pstn.models.stacked import Stacked

    stack_dir, run_dirs = Path(stack_dir), [Path(d) for d in run_dirs]
    built = []
    for config in configs:
        pyro.set_rng_seed(config.train.seed)  # the member's initial weights are its single run's
        built.append(build(config, download))
    datas, models = zip(*built)
    trainer = StackTrainer(Stacked.from_models(list(models)), [c.train for c in configs])
    with locked(stack_dir, what="stack"):
        if resume and (stack_dir / CHECKPOINT).is_file():
            trainer.load_checkpoint(stack_dir / CHECKPOINT)
        elif not resume:
            try:
                stack_dir.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                raise ValueError(f"stack directory {stack_dir} already exists: --resume it") from None
            write_atomic(stack_dir / STACK_FILE, json.dumps({"configs": [asdict(c) for c in configs],
                                                              "run_dirs": [str(d) for d in run_dirs]}, indent=2))
        wall = time.perf_counter()
        trainer.fit([d.train for d in datas], [d.val for d in datas], run_dir=stack_dir, progress=progress,
                    on_epoch_end=on_epoch_end)
    wall = (time.perf_counter() - wall) / len(configs)
    results = []
    for r, (config, data, run_dir) in enumerate(zip(configs, datas, run_dirs)):
        member = trainer.model.member(r).eval()
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / CONFIG_FILE, config.to_json())
        member_trainer = Trainer(member, config.train)
        member_trainer.epoch, member_trainer.step = trainer.epoch, trainer.step
        member_trainer.history = trainer.member_histories[r]
        state = member_trainer.state_dict()
        del state["optimizer"]  # the stack's Adam state lives in stack_dir
        save_atomic(state, run_dir / CHECKPOINT)
        results.append(finish_run(member, config, data, trainer.member_histories[r], trainer.epoch, trainer.step,
                                  trainer.device, run_dir, wall))
    return results


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
        ("run directory", str(run_dir)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@click.command(cls=SafeCommand)
@click.option("--model", type=click.Choice(MODEL_NAMES), default="gamma_pstn")
@click.option("--data", type=DataName(), default="mnist30",
              help=f"{', '.join(dataset_names())}; ucr/<Name> (a UCR series data set under <data root>/UCR); or a "
                   "path: an .npz (arrays images, labels, optionally test_images, test_labels), a folder with one "
                   "sub-folder of images per class, or a UCR .tsv / .ts file.")
@click.option("--fold", type=click.IntRange(0, 4), default=0, help="MNIST-subset fold; for ucr/<Name>, the seed of the train / validation split.")
@click.option("--folds", type=CommaList(int, choices=range(5)), default=None,
              help="Several folds at once, as one stacked fit (e.g. 0,1,2,3,4); overrides --fold.")
@click.option("--seeds", type=CommaList(int), default=None,
              help="Several seeds at once, as one stacked fit; overrides --seed (with --folds: every pair).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default: 600 (MNIST), 200 (UCR).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Default: 8 (MNIST), 16 (UCR).")
@click.option("--lr", type=FloatRange(min=0, min_open=True), default=None, help="Default: per model.")
@click.option("--localizer-lr-mult", type=FloatRange(min=0), default=0.1)
@click.option("--weight-decay", type=FloatRange(min=0), default=None, help="Coupled L2, as torch Adam. Default: 0.01 (MNIST), 0 (UCR).")
@click.option("--kl-weight", type=FloatRange(min=0), default=None, help="Authors' per-dimension w (flow_pstn: the entropy weight α). Default: per model and subset.")
@click.option("--annealing", type=click.Choice(ANNEALING), default="constant")
@click.option("--warmup-epochs", type=FloatRange(min=0), default=0.0, help="For --annealing linear.")
@click.option("--elbo", type=click.Choice(tuple(ELBOS)), default="trace")
@click.option("--train-samples", type=click.IntRange(min=1), default=None, help="S at training time. Default: 1 (MNIST), 10 (UCR, models that sample θ).")
@click.option("--test-samples", type=click.IntRange(min=1), default=10)
@click.option("--layout", type=click.Choice((*LAYOUTS, "tps", *CPAB_FAMILIES, TimeAffine.name)), default=None,
              help="Transformation family. Images: an affine or Lie layout, tps (18 dof) or cpab (34-dof "
                   "diffeomorphism); series (ucr/<Name>): cpab1d (9-dof diffeomorphism of the time axis) or "
                   "time_affine (its shift and scale). Default: similarity for images, cpab1d for series; "
                   "lie_similarity for flow_pstn.")
@click.option("--prior-scale", type=FloatRange(min=0, min_open=True), default=None, help="σ_p (pstn) or σ_DA (da).")
@click.option("--fill", type=click.Choice(FILLS), default="background",
              help="What warps put outside the input: the data's background (an empty pixel after normalisation) "
                   "or zero in normalised units (the authors' code).")
@click.option("--precise-bn/--running-bn", default=True,
              help="After the last epoch, recompute batch-norm statistics over the training split (default), or "
                   "keep the running averages of training. No effect on networks without batch norm.")
@device_option()
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads while fitting. Default: 1, chosen for steps as small as the papers' "
                   "(python -m experiments.bench --threads measures a step at 1 and 2 threads).")
@click.option("--seed", type=int, default=42)
@click.option("--val-size", type=click.IntRange(min=1), default=1000)
@click.option("--val-every", type=click.IntRange(min=1), default=10, help="Validate every N epochs.")
@click.option("--test-size", type=click.IntRange(min=1), default=None, help="Use only the first N test images.")
@click.option("--evaluate-on", type=click.Choice(("test", "val")), default="test",
              help="'val' for model selection: metrics on the validation split, the test set untouched.")
@click.option("--out-dir", callback=writable_dir, type=click.Path(file_okay=False), default="runs")
@click.option("--run-name", default=None, help="Default: MODEL-DATA-foldK-seedS-TIMESTAMP.")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Continue the interrupted run in this directory (its config.json is used).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Default: $PYRO_PSTN_DATA or ./data.")
@click.option("--download", is_flag=True, help="Download missing MNIST / Fashion-MNIST files (needs internet).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
def main(**opts):
    """Fit MODEL on DATA by SVI and evaluate its posterior predictive on the test set.

    Under torchrun (``torchrun --nproc_per_node N -m experiments.fit ...``) the fit is data-parallel
    over the N processes (torch DDP: gloo on CPU, NCCL with one GPU per process on CUDA); --batch-size
    is each process's batch.
    """
    ctx = click.get_current_context()
    given = {name for name in opts if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    group, finished = None, False
    try:
        if distributed.launched_by_torchrun():
            if len(opts["folds"] or ()) > 1 or len(opts["seeds"] or ()) > 1:
                raise click.UsageError("--folds / --seeds fit a stack in one process; under torchrun fit one run")
            group = distributed.join_process_group(opts["device"])
            opts["device"] = group.device
        metrics = _main(group, opts, given)
        finished = True
    finally:
        distributed.leave_process_group(synchronize=finished)  # no barrier after an error: others may not arrive
    diverged = [m["diverged"] for m in metrics if m.get("diverged")]
    if diverged:
        click.echo(f"warning: the fit diverged ({diverged[0]}): its numbers mean nothing. Lower --lr, or look for "
                   "bad data", err=True)
        sys.exit(1)


#: The options that set a field of the run's config (``train.`` ones: of its TrainConfig).
OPTION_FIELD = {
    "model": "model", "data": "data", "fold": "fold", "layout": "layout", "prior_scale": "prior_scale",
    "fill": "fill", "test_samples": "test_samples", "val_size": "val_size", "test_size": "test_size",
    "evaluate_on": "evaluate_on", "seed": "train.seed", "epochs": "train.epochs", "batch_size": "train.batch_size",
    "lr": "train.lr", "localizer_lr_mult": "train.localizer_lr_mult", "weight_decay": "train.weight_decay",
    "kl_weight": "train.kl_weight", "annealing": "train.annealing", "warmup_epochs": "train.warmup_epochs",
    "elbo": "train.elbo", "train_samples": "train.num_particles", "precise_bn": "train.precise_bn",
    "val_every": "train.val_every", "device": "train.device", "threads": "train.threads",
}
#: Options a resumed run may take anew: where and how it runs, not what it computes.
RESUME_MAY_CHANGE = ("device", "threads")


def check_resume_options(run_dir: Path, stored: dict, opts: dict, given: set[str]) -> None:
    """Refuse a ``--resume`` given options that differ from the run's config, naming each one."""
    if given & {"folds", "seeds"}:
        raise ValueError("--folds / --seeds start a new stacked fit; --resume continues the run as it was configured")
    requested, field_of = {}, {}
    for option in sorted(given & set(OPTION_FIELD) - set(RESUME_MAY_CHANGE)):
        *parent, key = OPTION_FIELD[option].split(".")
        stored_value = stored["train"][key] if parent else stored[key]
        requested[OPTION_FIELD[option]], field_of[OPTION_FIELD[option]] = opts[option], stored_value
    check_same_config(run_dir, field_of, requested,
                      "--resume continues a run as it was configured: leave these options out, or fit a new run")


def _new_configs(opts: dict) -> list[FitConfig]:
    """The configs of a new fit: one, or one per (fold, seed) of a stack."""
    train = {key.removeprefix("train."): opts[option] for option, key in OPTION_FIELD.items()
             if key.startswith("train.") and opts[option] is not None}
    members = [(fold, seed) for fold in (opts["folds"] or [opts["fold"]]) for seed in (opts["seeds"] or [opts["seed"]])]
    return [
        FitConfig.with_defaults(
            opts["model"], opts["data"], {**train, "seed": seed}, fold=fold, layout=opts["layout"],
            prior_scale=opts["prior_scale"], fill=opts["fill"], test_samples=opts["test_samples"], val_size=opts["val_size"],
            test_size=opts["test_size"], data_root=opts["data_root"], evaluate_on=opts["evaluate_on"],
        )
        for fold, seed in members
    ]


def _main(group, opts, given: set[str]) -> list[dict]:
    """Fit (or resume) what the options say; the metrics of each run this process evaluated."""
    resume = bool(opts["resume_dir"])
    if resume:
        run_dir = Path(opts["resume_dir"])
        if (run_dir / STACK_FILE).is_file():
            if group is not None:
                raise click.UsageError(f"{run_dir} is a stack: resume it in one process, without torchrun")
            configs, member_dirs = read_stack(run_dir)
            check_resume_options(run_dir, asdict(configs[0]), opts, given - {"fold", "seed"})
            return _fit_stack(configs, member_dirs, run_dir, opts, resume=True)
        if not (run_dir / CONFIG_FILE).is_file():
            raise ValueError(f"{run_dir} holds no {CONFIG_FILE}: it is not a run directory of experiments.fit")
        config = read_config(FitConfig, run_dir / CONFIG_FILE)
        check_resume_options(run_dir, asdict(config), opts, given)
        for option in given & set(RESUME_MAY_CHANGE):
            setattr(config.train, option, opts[option])
        if group is not None:
            config.train.device = group.device
        if not (run_dir / CHECKPOINT).is_file():
            click.echo(f"{run_dir} stopped before its first checkpoint: fitting it from the start", err=True)
    else:
        configs = _new_configs(opts)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if group is not None:
            stamp = group.broadcast(stamp)  # every process names the same run directory
        names = [opts["run_name"] if opts["run_name"] and len(configs) == 1 else
                 f"{c.model}-{c.data_label}-fold{c.fold}-seed{c.train.seed}-{stamp}" for c in configs]
        run_dirs = [Path(opts["out_dir"]) / name for name in names]
        stack_dir = Path(opts["out_dir"]) / f"{opts['run_name'] or configs[0].model + '-' + configs[0].data_label}-stack-{stamp}"
        for d in run_dirs + ([stack_dir] if len(configs) > 1 else []):
            if d.exists():
                state = "" if (d / CHECKPOINT).is_file() else " (it has no checkpoint yet: --resume starts it again)"
                raise click.UsageError(f"run directory {d} already exists{state}; pick another --run-name or --resume it")
        if len(configs) > 1:
            return _fit_stack(configs, run_dirs, stack_dir, opts)
        config, run_dir = configs[0], run_dirs[0]
        if group is not None:
            group.barrier()  # every process has checked the name before rank 0 creates it
    try:
        metrics = run_fit(config, run_dir, resume=resume, download=opts["download"], progress=opts["progress"])
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; continue with: python -m experiments.fit --resume {run_dir}", err=True)
        sys.exit(130)
    if metrics is None:  # a rank other than 0
        return []
    click.echo(summary_table(metrics, run_dir))
    return [metrics]


def _fit_stack(configs: list[FitConfig], run_dirs, stack_dir: Path, opts: dict, resume: bool = False) -> list[dict]:
    try:
        results = run_fit_stack(configs, run_dirs, stack_dir, resume=resume, download=opts["download"],
                                progress=opts["progress"])
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; continue with: python -m experiments.fit --resume {stack_dir}", err=True)
        sys.exit(130)
    for metrics, run_dir in zip(results, run_dirs):
        click.echo(summary_table(metrics, Path(run_dir)) + "\n")
    return results


if __name__ == "__main__":
    main()
