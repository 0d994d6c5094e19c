"""Fit one model on one data set and leave a run directory.

    python -m experiments.fit --model gamma_pstn --data mnist30

Defaults are the authors' UAI MNIST-subset protocol (anchors.md §1.6): batch 8, 600 epochs,
Adam with the learning rate of each model, localizer lr × 0.1, coupled weight decay 0.01,
1 training / 10 test samples, the KL weight w of the subset size.

The run directory holds ``config.json``, ``checkpoint.pt`` (resumable with ``--resume``),
``metrics.json``, ``reliability.png``, ``augmentations.png`` and ``posterior.nc`` (ArviZ).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import click
from click.core import ParameterSource

from inference import distributed
from inference.engine import CHECKPOINT, ELBOS
from inference.fitting import CONFIG_FILE, STACK_FILE, read_stack, run_fit, run_fit_stack, summary_table
from inference.runs import check_same_config
from inference.schedules import ANNEALING
from inference.spec import FILLS, FitConfig, read_config
from pyro_pstn.data import dataset_names, is_dataset_name, unknown_dataset
from pyro_pstn.models import MODEL_NAMES
from pyro_pstn.transforms import CPAB_FAMILIES, LAYOUTS, TimeAffine

from .cli import CommaList, FloatRange, SafeCommand, device_option, writable_dir
from .config import authors_config


class DataName(click.ParamType):
    """``--data``: a registered name, ``ucr/<Name>`` or a path; others list the valid ones."""

    name = "data"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if is_dataset_name(value):
            return value
        self.fail(unknown_dataset(value), param, ctx)


#: Why a stack does not run under torchrun (issue 34): what each would split.
STACK_UNDER_TORCHRUN = (
    "--folds / --seeds fit the runs as one stack, in one process: a stack's step already holds every member's "
    "batch, and a torchrun group splits the batch of one run over its processes (each rank its share of the "
    "examples, gradients averaged); the stack's trainer does not split its members' batches over processes. "
    "Fit the stack without torchrun (it uses the cores a group would), or each run under torchrun on its own")


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
def main(**opts) -> None:
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
                raise click.UsageError(STACK_UNDER_TORCHRUN)
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
        authors_config(
            opts["model"], opts["data"], {**train, "seed": seed}, fold=fold, layout=opts["layout"],
            prior_scale=opts["prior_scale"], fill=opts["fill"], test_samples=opts["test_samples"], val_size=opts["val_size"],
            test_size=opts["test_size"], data_root=opts["data_root"], evaluate_on=opts["evaluate_on"],
        )
        for fold, seed in members
    ]


def _main(group: str | None, opts: dict, given: set[str]) -> list[dict]:
    """Fit (or resume) what the options say; the metrics of each run this process evaluated."""
    resume = bool(opts["resume_dir"])
    if resume:
        run_dir = Path(opts["resume_dir"])
        if (run_dir / STACK_FILE).is_file():
            if group is not None:
                raise click.UsageError(f"{run_dir} is a stack. {STACK_UNDER_TORCHRUN}")
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


def _fit_stack(configs: list[FitConfig], run_dirs: list[Path], stack_dir: Path, opts: dict, resume: bool = False) -> list[dict]:
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
