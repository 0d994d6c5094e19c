"""What the sweep commands share: where results go, the authors' protocol for a sweep's run, the
hyperparameters selected on validation, and the options of every sweep (workers, threads, stacks,
shards, folders)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from inference.sweep import Run

from .cli import CommaList, device_option, shard_option, with_options, writable_dir
from .config import authors_config

RESULTS = Path(__file__).parent / "results"

#: ``--folds 0,1,2``: the authors' five folds of every subset size.
FOLDS = CommaList(int, choices=range(5))


def study_run(model: str, data: int | str, fold: int, result_file: Path, run_root: str, train: dict | None = None,
              options: dict | None = None) -> Run:
    """A sweep's run of ``model`` on ``data`` (an MNIST subset size, or a name such as ``ucr/FaceAll``)
    at the authors' protocol, but for ``train`` / ``options`` (TrainConfig / FitConfig fields)."""
    data = data if isinstance(data, str) else f"mnist{data}"
    return Run(authors_config(model, data, train=dict(train or {}), fold=fold, **(options or {})), result_file, run_root)


#: The hyperparameter that the ``grid`` command selects on the validation split, per model.
SELECTED_PARAM = {"pstn": "prior_scale", "gamma_pstn": "kl_weight"}
#: Row suffix of runs whose hyperparameter was selected on the validation split (``--selected``).
SELECTED = "@val"
#: How the tables write the selected hyperparameters: σ_p of the Gaussian P-STN, w of the Gamma P-STN.
PARAM_SYMBOL = {"prior_scale": "σ_p", "kl_weight": "w"}


def at_value(train: dict, param: str, value: float, options: dict | None = None) -> tuple[dict, dict]:
    """(training settings, model options) of a fit at ``param`` = ``value``: w is a training
    setting (the KL weight), σ_p an option of the model (its prior scale)."""
    options = options or {}
    if param == "kl_weight":
        return {**train, "kl_weight": value}, options
    return train, {**options, "prior_scale": value}


def fitted_at(config: dict, param: str) -> float:
    """The σ_p (``prior_scale``) or w (``kl_weight``, a training setting) a run's config was fitted at."""
    return config["train"][param] if param == "kl_weight" else config[param]


#: Torch threads per worker process; shared by every sweep command.
THREADS = click.option("--threads", type=click.IntRange(min=1), default=None,
                       help="Torch threads per worker (default: cores / workers).")


def sweep_options(run_root: str, stacks: str) -> Callable:
    """The options every stackable sweep shares: device, worker processes and their threads, ``--stack``
    (``stacks`` says what stacks), ``--shard``, the run and results folders and ``--aggregate-only``."""
    return with_options([
        device_option(),
        click.option("--workers", type=click.IntRange(min=1), default=1, help="Runs in parallel (worker processes)."),
        THREADS,
        click.option("--stack", type=click.IntRange(min=1), default=1,
                     help=f"Train up to this many runs ({stacks}) as one stacked fit."),
        shard_option(),
        click.option("--run-root", callback=writable_dir, default=run_root, help="Where the (uncommitted) run directories go."),
        click.option("--results-dir", callback=writable_dir, type=click.Path(file_okay=False), default=str(RESULTS), show_default=True),
        click.option("--aggregate-only", is_flag=True, help="Only rebuild the table from the finished runs."),
    ])


def paper_cell(table: dict, model: str, size: int) -> str:
    value = table.get(model, {}).get(size)
    return f"{value[0]:.4f} ± {value[1]:.4f}" if value else "—"
