"""Where a P-STN's miscalibration comes from, measured (issue 16: the Gaussian P-STN's ECE at MNIST1000).

    python -m experiments.confidence --size 1000

Two parts, both from runs that already exist (nothing is trained here):

1. **Test set** (the ``mnist_subsets`` result files at ``--sizes``): accuracy, ECE and the signed
   gap mean confidence − accuracy (> 0 overconfident, < 0 underconfident) of every model, and the
   pooled reliability diagrams of CNN and P-STN.
2. **Why** (the checkpoints of ``reproduce grid`` at ``--size``, on its validation split, so the test
   set stays untouched): every σ_p of the Gaussian P-STN and every w of the Gamma P-STN predicts
   at the posterior location μ(x) (no draws of θ) and with S = 1, 3, 10 posterior draws (the BMA the
   tables report). Training and test-time averaging are thereby separated: if the classifier at μ(x)
   is calibrated and the BMA is not, the miscalibration comes from averaging over q(θ|x), whose
   width the prior sets.

Per-run evaluations are kept in ``experiments/results/confidence/runs/`` (a rerun skips them);
the table goes to ``experiments/results/confidence_mnist<size>.md`` (+ ``.json``, figures).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import click
import torch
from tqdm import tqdm

from inference.kinds import load_run
from inference.localization import posterior_variance
from inference.metrics import classification_metrics, pool_bins, reliability_bins
from inference.predictive import predict, predict_at_mean
from inference.runs import machine, write_json, write_result
from inference.stats import mean_std
from pyro_pstn.data import SUBSET_SIZES, load_dataset

from .cli import CommaList, SafeCommand, writable_dir
from .config import GAUSSIAN_PRIOR_SCALE
from .reproduce import calibration_path, run_path
from .sweeps import PARAM_SYMBOL, RESULTS, SELECTED, SELECTED_PARAM, fitted_at

#: The test-table rows whose calibration is compared (``<model>@val``: the validation-selected value).
TEST_ROWS = ("cnn", "stn", "da", "pstn", "pstn@val", "gamma_pstn", "gamma_pstn@val")


def _overconfidence(bins: dict) -> float:
    return pool_bins([bins]).overconfidence()


def _row_label(row: str, runs: list[dict]) -> str:
    """``pstn, σ_p = 0.15`` etc.: the value the row's runs used."""
    model = row.removesuffix(SELECTED)
    if model not in SELECTED_PARAM or not runs:
        return row
    value = fitted_at(runs[0]["config"], SELECTED_PARAM[model])
    how = "selected on validation" if row.endswith(SELECTED) else "the authors'"
    return f"{model}, {PARAM_SYMBOL[SELECTED_PARAM[model]]} = {value:g} ({how})"


GAP_COLUMNS = ["| {} | folds | accuracy | ECE (15 bins) | confidence − accuracy |", "|---|---:|---|---|---|"]


def _gap_row(label: str, runs: list[dict]) -> tuple[str, list[float]]:
    """A table row of test accuracy, ECE and signed gap over ``runs``, and the per-run gaps
    (from the runs that kept their reliability bins: the earliest result files did not)."""
    over = [_overconfidence(r["reliability"]) for r in runs if "reliability" in r]
    return (f"| {label} | {len(runs)} | {mean_std([r['test']['accuracy'] for r in runs])} | "
            f"{mean_std([r['test']['ece'] for r in runs])} | {mean_std(over) if over else 'no bins kept'} |"), over


def test_set_rows(results: Path, size: int) -> tuple[list[str], dict, dict]:
    """Markdown rows, a JSON table and pooled bins of the test-set results at ``size``."""
    lines = [f"### MNIST{size}, test set (10,000 images, S = 10)", "", GAP_COLUMNS[0].format("model"), GAP_COLUMNS[1]]
    table, curves = {}, {}
    for row in TEST_ROWS:
        runs = [json.loads(p.read_text()) for f in range(5) if (p := run_path(results, row, size, f)).exists()]
        if not runs:
            continue
        label = _row_label(row, runs)
        line, over = _gap_row(label, runs)
        lines.append(line)
        table[row] = {"label": label, "folds": [r["fold"] for r in runs],
                      "accuracy": statistics.mean(r["test"]["accuracy"] for r in runs),
                      "ece": statistics.mean(r["test"]["ece"] for r in runs),
                      "overconfidence": statistics.mean(over) if over else None}
        if over:
            curves[label] = pool_bins([r["reliability"] for r in runs if "reliability" in r])
    return lines, table, curves


def calibration_study_rows(results: Path, size: int) -> tuple[list[str], dict[str, float]]:
    """The same columns for the runs of ``reproduce calibration --size`` (which kept their bins),
    and each run label's mean signed gap."""
    stems = sorted({p.stem.rsplit("-fold", 1)[0] for p in (results / "calibration" / "runs").glob(f"mnist{size}-*.json")})
    gaps: dict[str, float] = {}
    if not stems:
        return [], gaps
    lines = [f"### MNIST{size}, test set: the runs of `reproduce calibration --size {size}`", "",
             GAP_COLUMNS[0].format("run"), GAP_COLUMNS[1]]
    for stem in stems:
        label = stem.removeprefix(f"mnist{size}-")
        runs = [json.loads(p.read_text()) for f in range(5) if (p := calibration_path(results, size, label, f)).exists()]
        line, over = _gap_row(label, runs)
        gaps[label] = statistics.mean(over)
        lines.append(line)
    return lines + [""], gaps


def confident(gap: float, form: str = "emphasised", slightly: float = 0.0) -> str:
    """The word for a signed calibration gap (confidence − accuracy), chosen by its sign: ``*under*confident``
    (``form="plain"``: underconfident, ``"noun"``: underconfidence) or the same with over; with
    ``slightly``, 'slightly' where the gap is smaller than it."""
    prefix = "under" if gap < 0 else "over"
    if form == "noun":
        return f"{prefix}confidence"
    word = f"{prefix}confident" if form == "plain" else f"*{prefix}*confident"
    return ("slightly " if abs(gap) < slightly else "") + word


def share(metrics: dict) -> str:
    """How much of an ECE the signed gap accounts for."""
    return "nearly all" if abs(metrics["overconfidence"]) >= 0.9 * metrics["ece"] else "part"


def calibrated(at_mean: float, averaged: float) -> str:
    """Predicting at μ(x), against the S-draw average: calibrated (under 0.02), better, or not."""
    return "calibrated" if at_mean < 0.02 else "better calibrated" if at_mean < averaged else "no better calibrated"


def rises(at: dict, samples: tuple[int, ...]) -> str:
    """Whether the S-draw ECE rises with every step of S."""
    eces = [at[f"S{k}"]["ece"] for k in samples]
    return "rises" if all(a < b for a, b in zip(eces, eces[1:])) else "does not rise steadily"


def findings(table: dict, size: int, samples: tuple[int, ...]) -> list[str]:
    """The measured answers, as sentences built from the tables above (so they cannot drift from them)."""
    test, grid = table["test"].get(size, {}), table["grid"].get("pstn", {})
    sigma = GAUSSIAN_PRIOR_SCALE[size]
    at = grid.get(f"{sigma:g}")
    if "pstn" not in test or "cnn" not in test or at is None:
        return []
    s_max = f"S{samples[-1]}"
    values = sorted(grid, key=float)
    out = ["## Findings", "",
           f"- **Direction.** At MNIST{size} the Gaussian P-STN at the authors' σ_p = {sigma:g} is "
           f"{confident(test['pstn']['overconfidence'])}: confidence − accuracy = {test['pstn']['overconfidence']:+.4f} "
           f"against an ECE of {test['pstn']['ece']:.4f}, so {share(test['pstn'])} of its ECE is "
           f"{confident(test['pstn']['overconfidence'], 'noun')}. The CNN is "
           f"{confident(test['cnn']['overconfidence'], slightly=0.02)} "
           f"({test['cnn']['overconfidence']:+.4f}, ECE {test['cnn']['ece']:.4f}).",
           f"- **{'Not' if at['mean']['ece'] < at[s_max]['ece'] / 2 else 'Partly'} the classifier.** The same P-STNs "
           f"predicting at μ(x), without drawing θ, are {calibrated(at['mean']['ece'], at[s_max]['ece'])}: validation "
           f"ECE {at['mean']['ece']:.4f} (gap {at['mean']['overconfidence']:+.4f}) at accuracy "
           f"{at['mean']['accuracy']:.4f}, against ECE {at[s_max]['ece']:.4f} (gap {at[s_max]['overconfidence']:+.4f}) at "
           f"accuracy {at[s_max]['accuracy']:.4f} for the average over {samples[-1]} draws that the table reports.",
           f"- **σ_p sets it.** The learned posterior scale follows the prior (mean σ(x) = {at['posterior_scale']:.4f} at "
           f"σ_p = {sigma:g}), and the {samples[-1]}-draw ECE "
           f"{'grows' if grid[values[-1]][s_max]['ece'] > grid[values[0]][s_max]['ece'] else 'falls'} with σ_p from "
           f"{grid[values[0]][s_max]['ece']:.4f} (σ_p = {values[0]}) to {grid[values[-1]][s_max]['ece']:.4f} "
           f"(σ_p = {values[-1]}), while the ECE at μ(x) stays between "
           f"{min(grid[v]['mean']['ece'] for v in values):.4f} and {max(grid[v]['mean']['ece'] for v in values):.4f}. "
           "Single draws of θ that far from μ(x) often give an image the classifier gets wrong (accuracy with S = 1: "
           + ", ".join(f"{grid[v]['S1']['accuracy']:.4f} at {v}" for v in values if "S1" in grid[v])
           + "); averaging such confident but disagreeing predictions lowers the confidence of the average while its "
           "arg max stays right.",
           f"- **More test samples do not help.** The ECE of the average {rises(at, samples)} with S ("
           + ", ".join(f"S = {k}: {at[f'S{k}']['ece']:.4f}" for k in samples) + f" at σ_p = {sigma:g}; rising at σ_p = "
           + ", ".join(v for v in values if all(grid[v][f"S{a}"]["ece"] < grid[v][f"S{b}"]["ece"]
                                                for a, b in zip(samples, samples[1:]))) + "): the average converges to "
           "E_q[p(y | T_θ(x))], which is itself underconfident. A single draw is one confident prediction, so S = 1 has a "
           f"small ECE but the lowest accuracy ({at['S1']['accuracy']:.4f})." if "S1" in at else "",
           _flip(table, size),
           "- **What would change it**: a σ_p chosen on validation ECE or NLL rather than accuracy (σ_p = 0.05: "
           + (f"ECE {grid['0.05'][s_max]['ece']:.4f} at accuracy {grid['0.05'][s_max]['accuracy']:.4f}"
              if "0.05" in grid else "not run") + "), or predicting at μ(x). We change no default: the papers select "
           "σ_p on accuracy, and the S = 10 posterior predictive is what their tables report.",
           ""]
    return out[:2] + [bullet for bullet in out[2:] if bullet] + [""]


def _flip(table: dict, size: int) -> str:
    """The CNN's and the P-STN's signed gaps at the smaller sizes against ``size``."""
    parts, smaller_cnn_worse, cnn_gaps = [], [], []
    for n, rows in sorted(table["calibration"].items()):
        if n < size and "cnn" in rows:
            pstn = {k: v for k, v in rows.items() if k.startswith("pstn")}
            parts.append(f"At MNIST{n} (calibration study) the CNN's gap is {rows['cnn']:+.4f} and the P-STN's "
                         + ", ".join(f"{v:+.4f} ({k.removeprefix('pstn-sigma')})" for k, v in pstn.items()))
            smaller_cnn_worse.append(bool(pstn) and abs(rows["cnn"]) > min(abs(v) for v in pstn.values()))
            cnn_gaps.append(rows["cnn"])
    if not parts:
        return ""
    test = table["test"][size]
    cnn, pstn = test["cnn"]["overconfidence"], test["pstn"]["overconfidence"]
    if not (all(smaller_cnn_worse) and abs(cnn) < abs(pstn)):  # no flip in these numbers: no story of one
        return "- **Gaps at the smaller sizes.** " + "; ".join(parts) + f" (σ_p in brackets); at MNIST{size}: CNN " \
               f"{cnn:+.4f}, P-STN {pstn:+.4f}."
    return ("- **Why the ordering flips with data.** " + "; ".join(parts) + f" (σ_p in brackets): with little data the "
            f"CNN is strongly {confident(max(cnn_gaps, key=abs), 'plain')}, so "
            f"{'an underconfident' if pstn < 0 else 'an overconfident'} P-STN still has the smaller ECE. At "
            f"MNIST{size} the CNN's gap has shrunk to {cnn:+.4f}, while the P-STN's, which σ_p "
            f"sets, has not ({pstn:+.4f}): the ordering flips.")


def evaluate_grid_run(run_dir: Path, images: int, samples: tuple[int, ...], data_root: str | None) -> dict:
    """Validation metrics of one grid run at μ(x) and with each S of ``samples``, and the mean
    posterior scale (σ(x) of the Gaussian; the Student-t scale sqrt(β(x)/α0) of the Gamma P-STN)."""
    run = load_run(run_dir)
    config, model = run.config, run.model
    data = load_dataset(config.data, data_root, config.fold, config.val_size, config.test_size)
    x, y = data.val.images[:images], data.val.labels[:images]

    def measured(log_probs: torch.Tensor):
        return {**classification_metrics(log_probs, y), "overconfidence": reliability_bins(log_probs, y).overconfidence()}

    torch.manual_seed(0)
    out = {"mean": measured(predict_at_mean(model, x))}
    for s in samples:
        out[f"S{s}"] = measured(predict(model, x, s))
    with torch.no_grad():
        scale = posterior_variance(model, model.localizer(x)[1]).sqrt()
    return {"config": json.loads(config.to_json()), "images": len(y), "samples": list(samples),
            "machine": machine(),
            "posterior_scale": float(scale.mean()), **out}


def _grid_runs(results: Path, size: int) -> dict[tuple[str, float], list[Path]]:
    """The finished grid result files at ``size``, by (model, value)."""
    found: dict[tuple[str, float], list[Path]] = {}
    for model, param in SELECTED_PARAM.items():
        for path in sorted((results / "grid" / "runs").glob(f"{model}-mnist{size}-{param}*-fold*.json")):
            value = float(path.stem.split(param)[1].split("-fold")[0])
            found.setdefault((model, value), []).append(path)
    return dict(sorted(found.items()))


def grid_rows(evaluations: dict, model: str, samples: tuple[int, ...]) -> tuple[list[str], dict, dict]:
    """Markdown rows per grid value (mean ± std over folds), a JSON table and ECE-against-value curves."""
    param = SELECTED_PARAM[model]
    symbol = PARAM_SYMBOL[param]
    head = ["| " + symbol + " | folds | posterior scale | accuracy at μ(x) | ECE at μ(x) | conf − acc at μ(x) | "
            + " | ".join(f"accuracy S = {s}" for s in samples) + " | "
            + " | ".join(f"ECE S = {s}" for s in samples) + f" | conf − acc S = {samples[-1]} |",
            "|---|---:|" + "---|" * (4 + 2 * len(samples) + 1)]
    lines, table = list(head), {}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for (m, value), runs in evaluations.items():
        if m != model:
            continue
        keys = ["mean"] + [f"S{s}" for s in samples]
        cells = [mean_std([r["posterior_scale"] for r in runs]), mean_std([r["mean"]["accuracy"] for r in runs]),
                 mean_std([r["mean"]["ece"] for r in runs]), mean_std([r["mean"]["overconfidence"] for r in runs])]
        cells += [mean_std([r[f"S{s}"]["accuracy"] for r in runs]) for s in samples]
        cells += [mean_std([r[f"S{s}"]["ece"] for r in runs]) for s in samples]
        cells.append(mean_std([r[f"S{samples[-1]}"]["overconfidence"] for r in runs]))
        lines.append(f"| {value:g} | {len(runs)} | " + " | ".join(cells) + " |")
        table[f"{value:g}"] = {k: {metric: statistics.mean(r[k][metric] for r in runs)
                                   for metric in ("accuracy", "nll", "ece", "overconfidence")} for k in keys}
        table[f"{value:g}"]["posterior_scale"] = statistics.mean(r["posterior_scale"] for r in runs)
        for k, label in zip(keys, ["at μ(x)"] + [f"S = {s}" for s in samples]):
            xs, ys = curves.setdefault(label, ([], []))
            xs.append(value)
            ys.append(table[f"{value:g}"][k]["ece"])
    return lines, table, curves


@click.command(cls=SafeCommand)
@click.option("--size", type=click.Choice([str(s) for s in SUBSET_SIZES]), default="1000",
              help="The grids' subset size whose checkpoints are re-evaluated.")
@click.option("--sizes", type=CommaList(int, choices=SUBSET_SIZES), default="100,1000",
              help="Subset sizes of the test-set comparison (from the mnist_subsets result files).")
@click.option("--samples", type=CommaList(int), default="1,3,10", help="Numbers S of posterior draws to average.")
@click.option("--images", type=click.IntRange(min=1), default=2000, help="Validation images per run (the first N).")
@click.option("--run-root", callback=writable_dir, type=click.Path(file_okay=False), default="runs/grid",
              help="Where `reproduce grid` left its run directories (with their checkpoints).")
@click.option("--results-dir", callback=writable_dir, type=click.Path(file_okay=False), default=str(RESULTS))
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Default: $PYRO_PSTN_DATA or ./data.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
def main(size: str, sizes: list[int], samples: list[int], images: int, run_root: str, results_dir: str, data_root: str | None,
         progress: bool | None) -> None:
    """Measure where the P-STNs' miscalibration comes from: training, or averaging over q(θ|x)."""

    from inference.plots import calibration_curves, line_plot

    size, results = int(size), Path(results_dir)
    samples = tuple(sorted(set(samples)))
    if min(samples) < 1:
        raise click.BadParameter("every S must be at least 1", param_hint="--samples")
    found = _grid_runs(results, size)
    if not found:
        raise click.UsageError(f"no grid results at MNIST{size} under {results / 'grid' / 'runs'}: run `python -m "
                               f"experiments.reproduce grid --param prior_scale --size {size}` (and --param kl_weight) first")
    out_dir = results / "confidence" / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluations: dict[tuple[str, float], list[dict]] = {}
    missing = []
    todo = [(key, p) for key, paths in found.items() for p in paths]
    bar = tqdm(todo, desc="grid runs", disable=not (sys.stderr.isatty() if progress is None else progress))
    for key, path in bar:
        out = out_dir / path.name
        record = json.loads(out.read_text()) if out.exists() else None
        if record is None or record["images"] != images or record["samples"] != list(samples):
            run_dir = Path(run_root) / path.stem
            if not (run_dir / "checkpoint.pt").exists():
                missing.append(path.stem)
                continue
            try:
                began = time.perf_counter()
                record = evaluate_grid_run(run_dir, images, samples, data_root)
                record["seconds"] = time.perf_counter() - began
            except ValueError as err:
                raise click.UsageError(f"{run_dir}: {err}") from None
            record["fold"] = int(path.stem.rsplit("fold", 1)[1])
            write_json(out, record)
        evaluations.setdefault(key, []).append(record)

    lines = [
        f"# Calibration of the P-STNs at MNIST{size}: where the miscalibration comes from (issue 16)",
        "",
        f"Produced by `python -m experiments.confidence --size {size} --sizes {','.join(map(str, sizes))} "
        f"--samples {','.join(map(str, samples))} --images {images}`. Nothing is trained: part 1 reads the "
        "`mnist_subsets` result files, part 2 re-evaluates the checkpoints of `reproduce grid` "
        f"(`--param prior_scale` and `--param kl_weight`, `--size {size}`) on the first {images} images of each "
        "fold's validation split (the test set stays untouched). confidence − accuracy is the signed gap: "
        "> 0 overconfident, < 0 underconfident; |gap| ≤ ECE. Mean ± std over folds.",
        "",
        "## 1. Test set: who is over- and who is underconfident",
        "",
    ]
    table: dict = {"test": {}, "calibration": {}, "grid": {}}
    for s in sizes:
        rows, table["test"][s], curves = test_set_rows(results, s)
        study, table["calibration"][s] = calibration_study_rows(results, s)
        lines += rows + [""] + study
        if s == size and curves:
            chosen = {k: v for k, v in curves.items() if k.split(",")[0] in ("cnn", "pstn", "gamma_pstn")}
            calibration_curves(chosen, results / f"confidence_reliability_mnist{size}.png",
                               f"MNIST{size}, test set: pooled over folds")
            lines += [f"![reliability](confidence_reliability_mnist{size}.png)", ""]
    lines += [f"## 2. Why: the classifier at μ(x) against the average over S posterior draws (validation, MNIST{size})", ""]
    for model in SELECTED_PARAM:
        rows, table["grid"][model], curves = grid_rows(evaluations, model, samples)
        if len(rows) == 2:
            continue
        name = "Gaussian P-STN" if model == "pstn" else "Gamma P-STN"
        lines += [f"### {name}, by {PARAM_SYMBOL[SELECTED_PARAM[model]]}", ""] + rows + [""]
        figure = f"confidence_{model}_mnist{size}.png"
        line_plot(curves, results / figure, PARAM_SYMBOL[SELECTED_PARAM[model]], "validation ECE",
                  f"{name}, MNIST{size}: ECE at μ(x) and with S draws")
        lines += [f"![{model}]({figure})", ""]
    if missing:
        lines += [f"No checkpoint for {len(missing)} grid run(s) (their run directories are gone): "
                  f"{', '.join(missing)}. Rerun their grid to include them.", ""]
    lines += findings(table, size, samples)
    records = [r for runs in evaluations.values() for r in runs]
    lines += [f"Part 2: {len(records)} evaluations, {sum(r['seconds'] for r in records) / 60:.1f} min of wall time "
              f"in total (the sum over runs) on {os.cpu_count()}-core x86_64 CPUs; each run's machine is in its "
              "file under `confidence/runs/`."]
    text = "\n".join(lines) + "\n"
    write_result(results / f"confidence_mnist{size}.md", text)
    write_result(results / f"confidence_mnist{size}.json", json.dumps(table, indent=2) + "\n")
    click.echo(text)


if __name__ == "__main__":
    main()
