"""Measure the main job for all five models and write ``experiments/results/fit_mnist30.md``.

    python -m experiments.fit_mnist30 [--fold 0] [--models cnn,stn,da,pstn,gamma_pstn]

Each model is fitted by the user's command, ``python -m experiments.fit --model M --data mnist30``
with its defaults, in a subprocess whose wall time (start-up, data, training, evaluation, plots)
is what we report. Then ``experiments.bench`` is run and its table included.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import click

from pyro_pstn.models import MODEL_NAMES

from .bench import measure

RESULTS = Path(__file__).parent / "results"
#: Published MNIST30 test accuracies (%, mean ± std over 5 folds), for comparison only.
PAPER = {
    "cnn": "70.12 ± 2.46 (001 T2); 70.02 ± 4.41 (000 T1)",
    "stn": "69.26 ± 4.53 (001 T2); 63.75 ± 4.13 (000 T1)",
    "da": "— (000 Fig. 4 only)",
    "pstn": "76.06 ± 4.76 (000 T1, affine P-STN)",
    "gamma_pstn": "81.00 ± 3.92 (001 T2)",
}


@click.command()
@click.option("--fold", type=click.IntRange(0, 4), default=0)
@click.option("--models", default=",".join(MODEL_NAMES))
@click.option("--out-dir", default="runs/fit_mnist30")
@click.option("--bench-steps", type=click.IntRange(min=10), default=300)
def main(fold: int, models: str, out_dir: str, bench_steps: int):
    rows = []
    for model in models.split(","):
        run_dir = Path(out_dir) / f"{model}-fold{fold}-{time.strftime('%Y%m%d-%H%M%S')}"
        command = [sys.executable, "-m", "experiments.fit", "--model", model, "--data", "mnist30", "--fold", str(fold),
                   "--out-dir", out_dir, "--run-name", run_dir.name]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["kl_weight"] = json.loads((run_dir / "config.json").read_text())["train"]["kl_weight"]
        rows.append((model, wall, metrics))
        click.echo(f"{model}: {wall:.1f} s, accuracy {metrics['test']['accuracy']:.4f}")
    bench = measure((8, 256), bench_steps)
    machine = f"{platform.machine()} CPU, {rows[0][2]['machine']}, torch {rows[0][2]['torch']}"
    lines = [
        "# `experiments.fit` on MNIST30 with the default protocol",
        "",
        f"Produced by `python -m experiments.fit_mnist30 --fold {fold}` on {time.strftime('%Y-%m-%d')}, "
        f"on this project's 2-core development machine ({machine}), nothing else running.",
        "Each row is one `python -m experiments.fit --model M --data mnist30 --fold "
        f"{fold}` with its defaults (the authors' UAI protocol: batch 8, 600 epochs, Adam, localizer lr ×0.1, "
        "weight decay 0.01, 1 train / 10 test samples, similarity layout); wall time is the whole process. "
        "Test set: the official 10,000 MNIST test images. One fold, one seed (42): the papers' numbers are "
        "means over 5 folds and are given for comparison only.",
        "",
        "| model | params | w (per dim) | test acc | NLL | ECE (15 bins) | Brier | train s | wall s | paper MNIST30 acc % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for model, wall, m in rows:
        t = m["test"]
        lines.append(
            f"| {model} | {m['parameters']:,} | {m['kl_weight']:g} | {t['accuracy']:.4f} | {t['nll']:.4f} | "
            f"{t['ece']:.4f} | {t['brier']:.4f} | {m['train_seconds']:.1f} | {wall:.1f} | {PAPER[model]} |"
        )
    lines += [
        "",
        "## Pyro overhead (`python -m experiments.bench`)",
        "",
        "One training step of `gamma_pstn` through our engine (Trace_ELBO loss module, Adam) against a plain",
        "PyTorch step computing the same loss on the same networks; medians, steps interleaved.",
        "",
        "```",
        bench,
        "```",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fit_mnist30.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "fit_mnist30.json").write_text(
        json.dumps({model: {"wall_seconds": wall, **m} for model, wall, m in rows}, indent=2) + "\n"
    )
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
