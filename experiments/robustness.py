"""Robustness of fitted classifiers to a transformation applied at test time (issue 35).

    python -m experiments.robustness runs/fit_mnist30/*-fold0-seed* --name mnist30_fold0

Reads any run directories of classifiers (``experiments.fit``, ``experiments.flow``), moves their
test images by each rotation, translation and scale of the sweep (:mod:`inference.robustness`) and
writes ``<results-dir>/robustness/<name>.md`` (accuracy, NLL and ECE per amount, mean ± std over the
runs of each model, and their mean over the sweep), ``.json`` (every run's numbers) and a figure of
accuracy and ECE against the rotation.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import click

from inference.kinds import load_run
from inference.plots import line_plot
from inference.robustness import Shift, robustness
from inference.runs import machine, write_json, write_result
from inference.stats import mean_std
from inference.tables import Column, markdown

from .cli import CommaList, SafeCommand, writable_dir

RESULTS = Path(__file__).parent / "results"
METRICS = {"accuracy": "accuracy", "NLL": "nll", "ECE (15 bins)": "ece"}


def _sweep(rotations: list[float], translations: list[float], scales: list[float]) -> list[Shift]:
    return ([Shift("rotation", a) for a in rotations] + [Shift("translation", t) for t in translations]
            + [Shift("scale", s) for s in scales])


def _table(kind: str, label: str, key: str, models: dict[str, list[list[dict]]]) -> list[str]:
    """Rows: the amounts of ``kind``, then the mean over them; a column per model, mean ± std over its runs."""
    amounts = sorted({m["amount"] for runs in models.values() for m in runs[0] if m["kind"] == kind})

    def cell(model: str) -> Column:
        def reduce(amount: float | str, _: list) -> str:
            per_run = [[m[key] for m in run if m["kind"] == kind and (amount == "sweep" or m["amount"] == amount)]
                       for run in models[model]]
            return mean_std([statistics.mean(values) for values in per_run], unit="run")
        return Column(model, reduce)

    unit = {"rotation": "°", "translation": " of the width", "scale": "×"}[kind]
    columns = [Column(kind, lambda amount, _: "mean over the sweep" if amount == "sweep" else f"{amount:g}{unit}"),
               *(cell(model) for model in models)]
    return [f"### {label} against the {kind}", "", *markdown(columns, [(a, []) for a in [*amounts, "sweep"]]), ""]


@click.command(cls=SafeCommand)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--rotations", type=CommaList(float), default="-90,-60,-30,-15,0,15,30,60,90", show_default=True,
              help="Degrees.")
@click.option("--translations", type=CommaList(float), default="0,0.1,0.2", show_default=True,
              help="Fractions of the image's width, right and down.")
@click.option("--scales", type=CommaList(float, min=0, min_open=True), default="0.7,1,1.3", show_default=True)
@click.option("--samples", type=click.IntRange(min=1), default=10, show_default=True, help="Posterior draws S.")
@click.option("--test-size", type=click.IntRange(min=1), default=None, help="The first N test images only (marked).")
@click.option("--name", default="robustness", show_default=True, help="File name of the table, figure and JSON.")
@click.option("--results-dir", type=click.Path(file_okay=False), default=str(RESULTS), show_default=True,
              callback=writable_dir)
def main(run_dirs: tuple[str, ...], rotations: list[float], translations: list[float], scales: list[float], samples: int,
         test_size: int | None, name: str, results_dir: str) -> None:
    """Accuracy, NLL and ECE of fitted classifiers on test images rotated, shifted or scaled at test time."""
    if not name or "/" in name or name.startswith("."):
        raise click.BadParameter(f"{name!r} is not a file name", param_hint="--name")
    start, shifts = time.perf_counter(), _sweep(rotations, translations, scales)
    runs = {}
    for run_dir in run_dirs:
        run = load_run(run_dir)
        if not getattr(run.model, "classifies", False):
            raise ValueError(f"{run_dir} holds a {run.kind} run, not a classifier's")
        test, spec = run.data.test, getattr(run.data, "spec", None)
        images, labels = test.images[:test_size], test.labels[:test_size]
        measured = robustness(run.model, images, labels, shifts, spec.fill if spec is not None else 0.0, samples)
        runs[str(run_dir)] = {"model": getattr(run.config, "model", run.kind), "data": getattr(run.config, "data", None),
                              "test_images": len(labels), "metrics": measured}
        click.echo(f"{run_dir}: accuracy {measured[0]['accuracy']:.4f} … {measured[-1]['accuracy']:.4f}")
    models: dict[str, list[list[dict]]] = {}
    for run in runs.values():
        models.setdefault(run["model"], []).append(run["metrics"])
    out = Path(results_dir) / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    data = sorted({str(r["data"]) for r in runs.values()})
    lines = [f"# Robustness to test-time transformations: {name}", "",
             f"Produced by `python -m experiments.robustness <run directories> --name {name}` (the run directories are "
             f"listed in `{name}.json`): {len(runs)} runs ({', '.join(f'{m} × {len(r)}' for m, r in models.items())}) on "
             f"{', '.join(data)}, {runs[next(iter(runs))]['test_images']} test images"
             + (" (a subset: `--test-size`)" if test_size else "") + f", S = {samples} posterior draws. Each test image is "
             "moved by the same amount before it is classified; the plane around it is filled with the data's "
             "background. Cells: mean ± std over a model's runs. Machine: "
             f"{machine()}; {time.perf_counter() - start:.0f} s for the whole table.", ""]
    for kind, values in (("rotation", rotations), ("translation", translations), ("scale", scales)):
        if values:
            for label, key in METRICS.items():
                lines += _table(kind, label, key, models)
    lines += [f"![accuracy and ECE against the rotation]({name}.png)", ""] if rotations else []
    if rotations:
        series = {f"{model} {label}": ([m["amount"] for m in runs_[0] if m["kind"] == "rotation"],
                                       [statistics.mean(run[i][key] for run in runs_)
                                        for i, m in enumerate(runs_[0]) if m["kind"] == "rotation"])
                  for model, runs_ in models.items() for label, key in (("accuracy", "accuracy"), ("ECE", "ece"))}
        line_plot(series, out / f"{name}.png", "test-time rotation (degrees)", "accuracy / ECE",
                  f"{name}: mean over each model's runs")
    write_json(out / f"{name}.json", runs)
    text = "\n".join(lines)
    write_result(out / f"{name}.md", text)
    click.echo(text)


if __name__ == "__main__":
    main()
