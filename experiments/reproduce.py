"""One command per paper table.

    python -m experiments.reproduce mnist_subsets --sizes 30,100,1000 --folds 0,1,2,3,4 --workers 2

``mnist_subsets`` runs every (size, fold, model) with the protocol of paper 001 §5.2.1 /
anchors.md §1.6 (the defaults of ``experiments.fit``), keeps each finished run's metrics as a small
JSON in ``experiments/results/mnist_subsets/runs/`` and skips runs whose JSON exists, so a sweep
longer than one working session resumes where it stopped. It then aggregates mean ± std over folds
into ``experiments/results/mnist_subsets.md`` (+ ``.json``) beside the papers' published values.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import click

from pyro_pstn.data import SUBSET_SIZES
from pyro_pstn.models import MODEL_NAMES

from .config import FitConfig, write_atomic

RESULTS = Path(__file__).parent / "results"

#: Published test accuracies (mean, std over 5 folds, as fractions). For comparison only.
PAPER_000_TABLE_1 = {  # Schwöbel et al. 2020, Table 1 (Gaussian P-STN, affine)
    "cnn": {10: (0.5151, 0.0381), 30: (0.7002, 0.0441), 100: (0.8690, 0.0163), 1000: (0.9583, 0.0031),
            3000: (0.9746, 0.0016), 10000: (0.9796, 0.0001)},
    "stn": {10: (0.5172, 0.0527), 30: (0.6375, 0.0413), 100: (0.8110, 0.0131), 1000: (0.9348, 0.0123),
            3000: (0.9634, 0.0092), 10000: (0.9761, 0.0047)},
    "pstn": {10: (0.5572, 0.0634), 30: (0.7606, 0.0476), 100: (0.9191, 0.0077), 1000: (0.9747, 0.0035),
             3000: (0.9787, 0.0013), 10000: (0.9829, 0.0025)},
}
PAPER_001_TABLE_2 = {  # Schwöbel et al. UAI 2022, Table 2 (Gamma P-STN)
    "cnn": {30: (0.7012, 0.0246), 100: (0.8729, 0.0058), 1000: (0.9580, 0.0033), 3000: (0.9748, 0.0021),
            10000: (0.9782, 0.0034)},
    "stn": {30: (0.6926, 0.0453), 100: (0.8216, 0.0230), 1000: (0.9205, 0.0058), 3000: (0.9471, 0.0022),
            10000: (0.9696, 0.0020)},
    "gamma_pstn": {30: (0.8100, 0.0392), 100: (0.9270, 0.0074), 1000: (0.9662, 0.0058), 3000: (0.9733, 0.0017),
                   10000: (0.9763, 0.0023)},
}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def run_path(results: Path, model: str, size: int, fold: int) -> Path:
    return results / "mnist_subsets" / "runs" / f"{model}-mnist{size}-fold{fold}.json"


def _run_one(
    model: str, size: int, fold: int, device: str, threads: int, run_root: str, results: Path, overrides: dict
) -> dict:
    """Fit one (model, size, fold) in a worker process and keep its metrics as a small JSON."""
    import torch

    from .fit import run_fit

    torch.set_num_threads(threads)
    train = {"device": device, **{k: v for k, v in overrides.items() if k == "epochs"}}
    extra = {k: v for k, v in overrides.items() if k == "test_size"}
    config = FitConfig.with_defaults(model, f"mnist{size}", train=train, fold=fold, **extra)
    run_dir = Path(run_root) / f"{model}-mnist{size}-fold{fold}-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    metrics = run_fit(config, run_dir, progress=False)
    record = {
        "model": model,
        "size": size,
        "fold": fold,
        "test": metrics["test"],
        "validation": metrics["validation"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "device": metrics["device"],
        "machine": f"{metrics['machine']} ({os.cpu_count()} cores, {threads} torch thread(s) per run), "
        f"torch {metrics['torch']}",
        "data_source": metrics["data_source"],
        "config": asdict(config),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_atomic(run_path(results, model, size, fold), json.dumps(record, indent=2) + "\n")
    return record


def _fmt(values: list[float]) -> str:
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 fold)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _paper(table: dict, model: str, size: int) -> str:
    value = table.get(model, {}).get(size)
    return f"{value[0]:.4f} ± {value[1]:.4f}" if value else "—"


def aggregate(results: Path, sizes, models) -> str:
    """Mean ± std over folds of every finished run, beside the papers' values; writes .md and .json."""
    records = [json.loads(p.read_text()) for p in sorted((results / "mnist_subsets" / "runs").glob("*.json"))]
    table = {}
    lines = [
        "# MNIST subsets: accuracy, NLL and ECE (mean ± std over folds)",
        "",
        "Produced by `python -m experiments.reproduce mnist_subsets` from the per-run files in "
        "`experiments/results/mnist_subsets/runs/` (one JSON per model, size and fold, each with its full config, "
        "machine and wall time). Protocol: the defaults of `experiments.fit` (the authors' UAI protocol: batch 8, "
        "600 epochs, Adam, localizer lr ×0.1, weight decay 0.01, 1 train / 10 test samples, similarity layout, "
        "the authors' fold files, the official 10,000 test images). Paper columns are the published values, "
        "for comparison only; `—` where a paper has no such row.",
        "",
    ]
    for size in sizes:
        lines += [
            f"## MNIST{size}",
            "",
            "| model | folds | accuracy | NLL | ECE (15 bins) | mean wall s / run | paper 000 T1 acc | paper 001 T2 acc |",
            "|---|---:|---|---|---|---:|---|---|",
        ]
        for model in models:
            runs = [r for r in records if r["model"] == model and r["size"] == size]
            acc, nll, ece = ([r["test"][k] for r in runs] for k in ("accuracy", "nll", "ece"))
            wall = f"{statistics.mean(r['wall_seconds'] for r in runs):.0f}" if runs else "—"
            table[f"{model}-mnist{size}"] = {
                "folds": sorted(r["fold"] for r in runs),
                **{k: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else None} for k, v in
                   (("accuracy", acc), ("nll", nll), ("ece", ece)) if v},
            }
            lines.append(
                f"| {model} | {len(runs)} | {_fmt(acc)} | {_fmt(nll)} | {_fmt(ece)} | {wall} | "
                f"{_paper(PAPER_000_TABLE_1, model, size)} | {_paper(PAPER_001_TABLE_2, model, size)} |"
            )
        missing = [(m, f) for m in models for f in range(5) if not run_path(results, m, size, f).exists()]
        if missing:
            lines += [
                "",
                f"Not run yet ({len(missing)} of {5 * len(models)}): "
                f"`python -m experiments.reproduce mnist_subsets --sizes {size}` fills them in (it skips finished runs).",
            ]
        lines.append("")
    shortened = sorted(
        f"{r['model']}-mnist{r['size']}-fold{r['fold']}" for r in records
        if r["config"]["train"]["epochs"] != 600 or r["config"]["test_size"] is not None
    )
    if shortened:
        lines += [f"**Not the full protocol** (fewer epochs or a test subset): {', '.join(shortened)}.", ""]
    machines = sorted({r["machine"] for r in records})
    lines += ["Machines of the runs above:", ""] + [f"- {m}" for m in machines]
    text = "\n".join(lines) + "\n"
    write_atomic(results / "mnist_subsets.md", text)
    write_atomic(results / "mnist_subsets.json", json.dumps(table, indent=2) + "\n")
    return text


@click.group()
def main():
    """Reproduce the papers' tables."""


@main.command("mnist_subsets")
@click.option("--sizes", default="30,100,1000", help=f"Comma-separated, from {SUBSET_SIZES}.")
@click.option("--folds", default="0,1,2,3,4")
@click.option("--models", default=",".join(MODEL_NAMES))
@click.option("--device", default="cpu")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Runs in parallel (worker processes).")
@click.option("--run-root", default="runs/mnist_subsets", help="Where the (uncommitted) run directories go.")
@click.option("--aggregate-only", is_flag=True, help="Only rebuild the table from the finished runs.")
@click.option("--results-dir", type=click.Path(file_okay=False), default=str(RESULTS), show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Smoke runs only: fewer epochs (marked in the table).")
@click.option("--test-size", type=click.IntRange(min=1), default=None, help="Smoke runs only: a test subset (marked).")
def mnist_subsets(sizes, folds, models, device, workers, run_root, aggregate_only, results_dir, epochs, test_size):
    """Every (size, fold, model) of the MNIST-subset tables (000 Table 1, 001 Table 2)."""
    sizes, folds, models = _ints(sizes), _ints(folds), models.split(",")
    bad = [s for s in sizes if s not in SUBSET_SIZES] + [f for f in folds if not 0 <= f < 5]
    unknown = [m for m in models if m not in MODEL_NAMES]
    if bad or unknown:
        raise click.UsageError(
            f"invalid sizes/folds {bad} or models {unknown}; valid sizes {SUBSET_SIZES}, folds 0..4, "
            f"models {', '.join(MODEL_NAMES)}"
        )
    results = Path(results_dir)
    overrides = {k: v for k, v in (("epochs", epochs), ("test_size", test_size)) if v is not None}
    todo = [(m, s, f) for s in sizes for f in folds for m in models if not run_path(results, m, s, f).exists()]
    if not aggregate_only and todo:
        run_path(results, "x", 0, 0).parent.mkdir(parents=True, exist_ok=True)
        threads = max(1, (os.cpu_count() or 1) // workers)
        click.echo(f"{len(todo)} runs to do ({workers} worker(s), {threads} thread(s) each)")
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(_run_one, m, s, f, device, threads, run_root, results, overrides): (m, s, f)
                for m, s, f in todo
            }
            for future in as_completed(futures):
                m, s, f = futures[future]
                r = future.result()
                click.echo(f"done {m} mnist{s} fold {f}: accuracy {r['test']['accuracy']:.4f}, {r['wall_seconds']:.0f} s")
    click.echo(aggregate(results, sizes, models))


if __name__ == "__main__":
    main()
