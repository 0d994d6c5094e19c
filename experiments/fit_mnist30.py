"""Measure the main job for all five models and write ``experiments/results/fit_mnist30.md``.

    python -m experiments.fit_mnist30 [--fold 0] [--seeds 42] [--models cnn,stn,da,pstn,gamma_pstn]

Each model is fitted by the user's command, ``python -m experiments.fit --model M --data mnist30``
with its defaults, in a subprocess whose wall time (start-up, data, training, evaluation, plots)
is what we report. With several seeds, a mean ± std table per model follows. Then
``experiments.bench`` is run and its table included.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

from inference.benchmarks import measure
from pyro_pstn.models import MODEL_NAMES

from .cli import CommaList, SafeCommand, writable_dir
from .papers import PAPER_000_TABLE_1, PAPER_001_TABLE_2

RESULTS = Path(__file__).parent / "results"
#: What the papers say about MNIST30 where their tables have no row for a model.
NO_PAPER_ROW = {"da": "— (000 Fig. 4 only)", "flow_pstn": "— (paper 004 has no MNIST30 row)"}


def paper_mnist30(model: str) -> str:
    """The published MNIST30 test accuracies of ``model`` (%, mean ± std over 5 folds), for comparison only."""
    if model in NO_PAPER_ROW:
        return NO_PAPER_ROW[model]
    tables = ((PAPER_001_TABLE_2, "001 T2"), (PAPER_000_TABLE_1, "000 T1, affine P-STN" if model == "pstn" else "000 T1"))
    return "; ".join(f"{100 * table[model][30][0]:.2f} ± {100 * table[model][30][1]:.2f} ({tag})"
                     for table, tag in tables if model in table)


def fit_once(model: str, fold: int, seed: int, out_dir: str) -> tuple[float, dict]:
    """Run the user's command in a subprocess; (wall seconds, metrics.json plus the KL weight)."""
    run_dir = Path(out_dir) / f"{model}-fold{fold}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [sys.executable, "-m", "experiments.fit", "--model", model, "--data", "mnist30", "--fold", str(fold),
               "--seed", str(seed), "--out-dir", out_dir, "--run-name", run_dir.name]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["kl_weight"] = json.loads((run_dir / "config.json").read_text())["train"]["kl_weight"]
    metrics["seed"] = seed
    metrics["finished"] = time.strftime("%Y-%m-%d")
    return wall, metrics


@click.command(cls=SafeCommand)
@click.option("--fold", type=click.IntRange(0, 4), default=0)
@click.option("--seeds", type=CommaList(int), default="42", help="Comma-separated seeds (42 is the default of experiments.fit).")
@click.option("--models", type=CommaList(str, choices=MODEL_NAMES), default=",".join(MODEL_NAMES))
@click.option("--out-dir", callback=writable_dir, default="runs/fit_mnist30")
@click.option("--bench-steps", type=click.IntRange(min=10), default=300)
@click.option("--reuse-runs", is_flag=True, help="Keep the fits recorded in fit_mnist30.json; only re-run the bench.")
def main(fold: int, seeds: list[int], models: list[str], out_dir: str, bench_steps: int, reuse_runs: bool) -> None:
    if reuse_runs:
        recorded = json.loads((RESULTS / "fit_mnist30.json").read_text())
        rows = [(r["model"], r["wall_seconds"], r) for r in recorded]
        fold = recorded[0]["fold"]
        seed_list = list(dict.fromkeys(r["seed"] for r in recorded))
        models = list(dict.fromkeys(r["model"] for r in recorded))
    else:
        seed_list = seeds
        rows = []
        for seed in seed_list:
            for model in models:
                wall, metrics = fit_once(model, fold, seed, out_dir)
                rows.append((model, wall, metrics))
                click.echo(f"{model} seed {seed}: {wall:.1f} s, accuracy {metrics['test']['accuracy']:.4f}")
    bench = measure((8, 256), bench_steps)
    first = rows[0][2]
    lines = [
        "# `experiments.fit` on MNIST30 with the default protocol",
        "",
        f"Produced by `python -m experiments.fit_mnist30 --fold {fold} --seeds {','.join(map(str, seed_list))} --models {','.join(models)}`"
        + (f" on {first['finished']}" if "finished" in first else "")
        + f", on this project's 2-core development machine ({first['machine']}, torch {first['torch']}, "
        f"device {first['device']}), one run at a time, nothing else running.",
        "",
        f"Each row is one `python -m experiments.fit --model M --data mnist30 --fold {fold} --seed S` with its "
        "defaults (the authors' UAI protocol: batch 8, 600 epochs, Adam, localizer lr ×0.1, weight decay 0.01, "
        "1 train / 10 test samples, similarity layout); *wall s* is the whole process (start-up, data, training, "
        "evaluation on the official 10,000 test images, plots, posterior file). The papers' numbers are means over "
        "5 folds and stand beside ours for comparison only.",
        "",
        "| model | seed | params | w (per dim) | test acc | NLL | ECE (15 bins) | Brier | train s | wall s | paper MNIST30 acc % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for model, wall, m in rows:
        t = m["test"]
        lines.append(
            f"| {model} | {m['seed']} | {m['parameters']:,} | {m['kl_weight']:g} | {t['accuracy']:.4f} | "
            f"{t['nll']:.4f} | {t['ece']:.4f} | {t['brier']:.4f} | {m['train_seconds']:.1f} | {wall:.1f} | "
            f"{paper_mnist30(model)} |"
        )
    if len(seed_list) > 1:
        lines += [
            "",
            f"Mean ± std over the {len(seed_list)} seeds (fold {fold}):",
            "",
            "| model | test acc | NLL | ECE | max wall s | paper MNIST30 acc % |",
            "|---|---|---|---|---:|---|",
        ]
        for model in models:
            runs = [(w, m) for name, w, m in rows if name == model]

            def stat(key: str):
                values = [m["test"][key] for _, m in runs]
                return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

            lines.append(
                f"| {model} | {stat('accuracy')} | {stat('nll')} | {stat('ece')} | {max(w for w, _ in runs):.1f} | "
                f"{paper_mnist30(model)} |"
            )
    lines += [
        "",
        "## Pyro overhead (`python -m experiments.bench`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by the same command (`experiments.bench.measure`, {bench_steps} steps). "
        "One training step of `gamma_pstn` through our engine (Trace_ELBO loss module, Adam) against a plain "
        "PyTorch step computing the same loss on the same networks; medians of interleaved steps; *fwd* is the "
        "loss computation alone, the rest of a step is backward and the Adam update.",
        "",
        "```",
        bench,
        "```",
        "",
        "The issue's target is a ratio ≤ 1.15 at batch 8. What the columns show: the extra time is a fixed cost "
        "per step, mostly in the forward pass, where Pyro traces the guide and replays the model (a message through "
        "the handler stack per site, plate broadcasting, a log-density for every site, including the θ | λ terms "
        "of model and guide that cancel in value but are still computed and differentiated); the backward pass "
        "carries the remainder. At batch 256 the networks dominate and the ratio approaches 1. Argument "
        "validation, which would add about a quarter of a batch-8 step, is off during training steps "
        "(`TrainConfig.validate_args`).",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fit_mnist30.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "fit_mnist30.json").write_text(
        json.dumps([{"model": model, "wall_seconds": wall, **m} for model, wall, m in rows], indent=2) + "\n"
    )
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
