"""Execute the notebooks on real runs and save them with their outputs (``make notebooks``).

    python -m experiments.notebooks                 # fit the three runs if missing, execute all notebooks
    python -m experiments.notebooks --only 01_inspect_posteriors

Each notebook opens the run directory named by ``PYRO_PSTN_RUN_DIR``; this command fits one run per
notebook under ``runs/notebooks/`` (skipped where it already finished), executes the notebook top to
bottom with nbclient and writes it back in place, outputs included, so a reader on the web sees the
figures. The runs:

- ``01_inspect_posteriors``: gamma_pstn on MNIST30 fold 0 with the authors' full protocol (600 epochs);
- ``02_pose_vae``: an affine TVAE with a diagonal pose prior, z = 8, 5 epochs on all of MNIST;
- ``03_flow_invariance``: flow_pstn on the 3-mode Mario-Iggy set, a 3-component mixture base,
  15 epochs on 4,000 images, the entropy held at 0 nats by the PID controller (the largest possible,
  a uniform over ±180°, is log 2 = 0.69 nats);
- ``04_localization``: the Gamma P-STN of ``localize rotated --epochs 10`` (rotated MNIST, frozen CNN,
  the run of ``experiments/results/localization_rotated_mnist.md``), under ``runs/localize/``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from inference.fitting import METRICS_FILE, run_fit
from inference.flow_runs import CONTROL_LOG, FlowConfig, run_flow
from inference.localizer_runs import LocalizeConfig, PretrainConfig, pretrain, run_localize
from inference.pose_vae_runs import PoseVAEConfig, run_pose_vae
from inference.sweep import cached_record
from pyro_pstn.data import DataError

from .cli import SafeCommand, writable_dir
from .config import authors_config
from .localize import RESULTS, result_path

if TYPE_CHECKING:  # nbformat is a development dependency, imported where notebooks run
    from nbformat import NotebookNode

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
RUN_ROOT = Path("runs") / "notebooks"


def execute_notebook(name: str, run_dir: str | Path, timeout: int = 600) -> NotebookNode:
    """Execute ``notebooks/<name>.ipynb`` on ``run_dir`` (cwd: the repository) and return the
    executed notebook; raises ``nbclient``'s CellExecutionError where a cell fails."""

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    saved = {k: os.environ.get(k) for k in ("PYRO_PSTN_RUN_DIR", "MPLBACKEND")}
    os.environ["PYRO_PSTN_RUN_DIR"] = str(run_dir)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


def _fit_posterior_run(run_root: Path, data_root: str | None) -> Path:
    run_dir = run_root / "gamma_pstn-mnist30-fold0"
    if not (run_dir / METRICS_FILE).exists():
        config = authors_config("gamma_pstn", "mnist30", data_root=data_root)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_fit(config, run_dir, progress=None)
    return run_dir


def _fit_pose_vae_run(run_root: Path, data_root: str | None) -> Path:
    config = PoseVAEConfig(model="tvae", transform="affine", pose_prior="diagonal", z_dim=8, data_root=data_root,
                           train=dict(epochs=5))
    if not (run_root / config.name / "samples.png").exists():
        run_pose_vae(config, run_root, progress=None)
    return run_root / config.name


def _fit_flow_run(run_root: Path, data_root: str | None) -> Path:
    config = FlowConfig(data="mario_iggy_3modes", layout="lie_rotation", base="mixture", components=3, train_size=4000,
                        no_aug_until=2, entropy_target=0.0, data_root=data_root, train=dict(epochs=15))
    if not (run_root / config.name / CONTROL_LOG).exists():
        run_flow(config, run_root, progress=None)
    return run_root / config.name


def _fit_localize_run(run_root: Path, data_root: str | None) -> Path:
    """The rotated-MNIST Gamma P-STN of ``localize rotated --epochs 10`` (fitted here if missing): a
    posterior over the angle, so the notebook shows draws and spreads, not only a mean."""
    localize_root = Path("runs") / "localize"
    pre = PretrainConfig(data="mnist", data_root=data_root)
    cached_record(result_path(RESULTS, pre.name), pre, lambda: pretrain(pre, localize_root), lambda r: "done")
    config = LocalizeConfig(model="gamma_pstn", data_root=data_root, train=dict(epochs=10))
    cached_record(result_path(RESULTS, config.name), config, lambda: run_localize(config, localize_root),
                  lambda r: "done")
    return localize_root / config.name


RUNS = {"01_inspect_posteriors": _fit_posterior_run, "02_pose_vae": _fit_pose_vae_run,
        "03_flow_invariance": _fit_flow_run, "04_localization": _fit_localize_run}


@click.command(cls=SafeCommand)
@click.option("--only", type=click.Choice(tuple(RUNS)), multiple=True, help="Only these notebooks (default: all).")
@click.option("--run-root", callback=writable_dir, type=click.Path(file_okay=False), default=str(RUN_ROOT), show_default=True,
              help="Where the notebooks' runs go (relative to the repository).")
@click.option("--data-root", default=None, help="Default: $PYRO_PSTN_DATA.")
def main(only: str, run_root: str, data_root: str | None) -> None:
    """Fit each notebook's run if missing, execute the notebook and save it with its outputs."""
    import nbformat

    for name in only or tuple(RUNS):
        click.echo(f"{name}: fitting its run (if missing)")
        try:
            run_dir = RUNS[name](Path(run_root), data_root)
        except (DataError, ValueError) as err:
            raise click.UsageError(str(err)) from None
        run_dir = run_dir.resolve()
        shown = run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir  # no home paths in outputs
        click.echo(f"{name}: executing on {shown}")
        nb = execute_notebook(name, shown)
        nbformat.write(nb, NOTEBOOKS / f"{name}.ipynb")
        click.echo(f"{name}: saved with outputs")


if __name__ == "__main__":
    main()
