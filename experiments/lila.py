"""The subset protocol of LILA (Immer et al. 2022) and InvDKGP, which the P-STN authors' last scripts
moved to: every model on LILA's transformed MNIST / Fashion-MNIST subsets (``lila/<set>/<N>``,
:mod:`pyro_pstn.data.lila`), seeds 1–3, test accuracy and NLL on the whole transformed test set.

    python -m experiments.lila --sets mnist,mnist_r180 --sizes 312 --workers 2

Each run is the library's MNIST-subset protocol (``experiments.fit``'s defaults: batch 8, Adam, the
authors' per-model learning rate, and w and σ_p of the papers' subset nearest to N) for ``--epochs``
epochs, with seed s both LILA's subset seed and the run's; finished runs are kept as JSON in
``results/lila/runs/`` and skipped, so the sweep resumes.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import click

from inference.runs import write_result
from inference.stats import mean_std
from inference.sweep import Shard, sweep
from inference.tables import Column, markdown
from pyro_pstn.data import LILA_SETS, LILA_SIZES

from .cli import CommaList, SafeCommand
from .config import protocol_size
from .sweeps import study_run, sweep_options

#: The models of the issue's protocol: the P-STN papers', paper 004's flow and Augerino.
LILA_MODELS = ("cnn", "da", "stn", "pstn", "gamma_pstn", "flow_pstn", "augerino")
#: LILA's seeds (its scripts run 1, 2 and 3).
LILA_SEEDS = (1, 2, 3)
#: Epochs of batch 8 per run (LILA: 1000 epochs of batches of up to 1000 images, with its LeNet).
EPOCHS = 200


def run_path(results: Path, model: str, data: str, seed: int) -> Path:
    return results / "lila" / "runs" / f"{model}-{data.replace('/', '-')}-seed{seed}.json"


def _cell(key: str):
    return lambda model, runs: mean_std([r["test"][key] for r in runs]) if runs else "not run"


def aggregate(results: Path) -> str:
    """One table per transformed set: mean ± std over seeds of every finished run, per size; the
    epochs stated are those the runs were fitted for."""
    records = [json.loads(p.read_text()) for p in sorted((results / "lila" / "runs").glob("*.json"))]
    epochs = ", ".join(map(str, sorted({r["config"]["train"]["epochs"] for r in records})))
    command = f"python -m experiments.lila --epochs {epochs}"
    lines = ["# LILA's subset protocol: test accuracy and NLL (mean ± std over seeds)", "",
             f"Produced by `{command}` (with `--sets` / `--sizes` for the rows run so far) from the per-run files in "
             "`experiments/results/lila/runs/`. Data: LILA's transformed sets and subsets (`pyro_pstn/data/lila.py`: "
             "its seeded transformations of each split, its permutation of the training images under seed s, the whole "
             f"transformed test set of 10,000 images). Training: the library's MNIST-subset protocol for {epochs} epochs "
             "of batch 8 (Adam, the authors' per-model learning rate, w and σ_p of the papers' MNIST subset nearest to "
             "N: " + ", ".join(f"{n} → {protocol_size(f'lila/mnist/{n}')}" for n in LILA_SIZES) + "), seed s for the "
             "subset and the run. LILA trains its own LeNet for 1000 epochs with a Laplace marginal likelihood; its and "
             "InvDKGP's published numbers are not in this project's sources (`../shared/papers`), so none is copied "
             "here.", ""]
    for name in LILA_SETS:
        runs = [r for r in records if r["data"].split("/")[1] == name]
        if not runs:
            continue
        sizes = sorted({int(r["data"].split("/")[2]) for r in runs})
        columns = [Column("model", lambda model, rows: model)]
        for n in sizes:
            def at(n: int, key: str):
                return lambda model, rows: _cell(key)(model, [r for r in rows if r["data"].endswith(f"/{n}")])
            columns += [Column(f"N = {n}: accuracy", at(n, "accuracy")), Column(f"N = {n}: NLL", at(n, "nll"))]
        seeds = sorted({r["fold"] for r in runs})
        rows = [(m, [r for r in runs if r["model"] == m]) for m in LILA_MODELS if any(r["model"] == m for r in runs)]
        lines += [f"## {name} (seeds {', '.join(map(str, seeds))})", "", *markdown(columns, rows), "",
                  f"Wall time of these {len(runs)} runs: {sum(r['wall_seconds'] for r in runs) / 3600:.2f} h in total, "
                  f"{statistics.mean(r['wall_seconds'] for r in runs):.0f} s a run on average.", ""]
    lines += ["Machines:", "", *[f"- {m}" for m in sorted({r["machine"] for r in records})], ""]
    text = "\n".join(lines)
    write_result(results / "lila.md", text)
    return text


@click.command(cls=SafeCommand)
@click.option("--sets", type=CommaList(str, choices=LILA_SETS), default="mnist,mnist_r180,fmnist,fmnist_r180",
              show_default=True)
@click.option("--sizes", type=CommaList(int, choices=LILA_SIZES), default="312,1250,5000", show_default=True)
@click.option("--models", type=CommaList(str, choices=LILA_MODELS), default=",".join(LILA_MODELS), show_default=True)
@click.option("--seeds", type=CommaList(int, min=0), default=",".join(map(str, LILA_SEEDS)), show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=EPOCHS, show_default=True, help="Epochs of batch 8 per run.")
@sweep_options("runs/lila", "of one model, set and size: its seeds")
def main(sets: list[str], sizes: list[int], models: list[str], seeds: list[int], epochs: int, device: str, workers: int,
         threads: int | None, stack: int, shard: Shard, run_root: str, aggregate_only: bool, results_dir: str) -> None:
    """Every model on LILA's transformed subsets (issue 35's subset protocol)."""
    results = Path(results_dir)
    jobs = [study_run(model, f"lila/{name}/{n}", seed, run_path(results, model, f"lila/{name}/{n}", seed), run_root,
                      {"device": device, "epochs": epochs, "seed": seed})
            for name in sets for n in sizes for model in models for seed in seeds]
    if sweep(jobs, shard, workers, threads, stack, aggregate_only):
        click.echo(aggregate(results))


if __name__ == "__main__":
    main()
