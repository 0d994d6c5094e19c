"""000 / 001 Table 3 on UCR time series: σ_p / w selected on validation, then repetitions, with
cpab1d time warps; the paired comparisons; precise-BN re-evaluation of older runs.

    python -m experiments.reproduce ucr --datasets FaceAll --epochs 100 --train-samples 1
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Iterable

import click

from inference.kinds import as_evaluated, has_precise_bn, recompute_precise_bn
from inference.runs import write_result
from inference.stats import best_on_validation, differences, mean_std, paired, paired_cell, paired_table
from inference.sweep import Shard, sweep
from inference.tables import Column, markdown

from .cli import CommaList, FloatRange, SafeCommand, device_option, shard_option, writable_dir
from .config import DEFAULT_LR
from .papers import PAPER_UCR
from .sweeps import PARAM_SYMBOL, RESULTS, SELECTED_PARAM, THREADS, at_value, fitted_at, paper_cell, study_run

# ---- UCR time series (papers 000 §5.3 Table 3, 001 §5.2.2 Table 3) ------------------------------

#: The UCR data sets of the table: the two of both papers' tables first, then four without paper values.
UCR_SETS = ("FaceAll", "PhalangesOutlinesCorrect", "GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf")
UCR_MODELS = ("cnn", "stn", "pstn", "gamma_pstn")
#: The validation grids of σ_p (Gaussian P-STN) and w (Gamma P-STN), around the authors' values.
UCR_GRIDS = {model: (SELECTED_PARAM[model], values)
             for model, values in {"pstn": (0.05, 0.1, 0.2, 0.6), "gamma_pstn": (0.0, 1e-5, 1e-4, 1e-3)}.items()}


def ucr_path(results: Path, kind: str, model: str, name: str, tag: str) -> Path:
    return results / "ucr" / kind / f"{model}-{name}-{tag}.json"


def _ucr_selection_runs(results: Path, model: str, name: str) -> dict[float, dict]:
    """{grid value: result record} of the selection runs of ``model`` on ``name`` that finished."""
    param, values = UCR_GRIDS[model]
    paths = {v: ucr_path(results, "select", model, name, f"{param}{v:g}") for v in values}
    return {v: json.loads(p.read_text()) for v, p in paths.items() if p.exists()}


def _ucr_selection_metrics(results: Path, model: str, name: str) -> tuple[dict[float, dict], bool]:
    """({grid value: validation metrics}, with precise BN?) of the selection runs that finished:
    precise BN where every one of them has it, else training's running averages."""
    seen = _ucr_selection_runs(results, model, name)
    precise = bool(seen) and all(map(has_precise_bn, seen.values()))
    return {v: as_evaluated(run, precise)["val"] for v, run in seen.items()}, precise


def _ucr_selected(results: Path, model: str, name: str) -> float | None:
    """The grid value of ``model`` on ``name`` with the best validation accuracy, ties (common: a
    validation split of 9 to 16 series) broken by the lower validation NLL; None until all ran."""
    val, _ = _ucr_selection_metrics(results, model, name)
    if len(val) < len(UCR_GRIDS[model][1]):
        return None
    return best_on_validation(val)




def _ucr_grid_lines(results: Path, models: Iterable[str], name: str) -> list[str]:
    """What the validation selection saw on ``name``: each grid value's validation accuracy and NLL
    (repetition 0's split), so a table reader can tell a clear choice from a tie, and the posterior
    std of θ it trained to, so a reader can tell whether the grid value changed the posterior at all."""
    lines = []
    for model in models:
        if model not in UCR_GRIDS:
            continue
        param, values = UCR_GRIDS[model]
        if seen := _ucr_selection_runs(results, model, name):
            val, precise = _ucr_selection_metrics(results, model, name)
            grid = "; ".join(f"{v:g}: {val[v]['accuracy']:.4f} / {val[v]['nll']:.4f} / "
                             + (f"{run['theta_posterior_std']:.4f}" if run.get("theta_posterior_std") is not None else "—")
                             for v, run in seen.items())
            steps = sorted({run["validation"]["step"] for run in seen.values()})
            lines.append(f"- {model} selection, validation accuracy / NLL ({'precise' if precise else 'running'} BN) "
                         f"/ posterior std of θ by {PARAM_SYMBOL[param]} ({len(seen)} of {len(values)} run, "
                         f"{' or '.join(map(str, steps))} optimiser steps each): {grid}.")
    return [""] + lines if lines else []


@click.command("ucr", cls=SafeCommand)
@click.option("--datasets", type=CommaList(str), default=",".join(UCR_SETS), help="UCR names under <data root>/UCR.")
@click.option("--models", type=CommaList(str, choices=UCR_MODELS), default=",".join(UCR_MODELS))
@click.option("--repetitions", type=click.IntRange(1, 5), default=5, help="Runs per model (repetition k seeds "
              "the train / validation split and the run).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default: the authors' 200.")
@click.option("--train-samples", type=click.IntRange(min=1), default=None,
              help="S of the models that sample θ. Default: the authors' 10.")
@device_option()
@click.option("--workers", type=click.IntRange(min=1), default=1)
@THREADS
@shard_option()
@click.option("--run-root", callback=writable_dir, default="runs/ucr")
@click.option("--results-dir", callback=writable_dir, type=click.Path(file_okay=False), default=str(RESULTS), show_default=True)
@click.option("--aggregate-only", is_flag=True, help="Only rebuild the table from the finished runs.")
@click.option("--kl-weight", type=FloatRange(min=0), default=None,
              help="Skip the selection of gamma_pstn's w: fit its repetitions at this w (e.g. the authors' 1e-4 on "
                   "FaceAll). They go to ucr/fixed/, beside (not over) the selected runs, and the table lists them "
                   "under the selected row, paired with it and with our CNN.")
@click.option("--prior-scale", type=FloatRange(min=0, min_open=True), default=None,
              help="As --kl-weight, for pstn's σ_p.")
@click.option("--recompute-bn", is_flag=True,
              help="Train nothing: evaluate again, with precise BN (batch-norm statistics recomputed over the training "
                   "split), the finished runs that used training's running averages and whose checkpoints are under "
                   "--run-root; store the result beside theirs and rebuild the table.")
def ucr(datasets: list[str], models: list[str], repetitions: int, epochs: int | None, train_samples: int | None, device: str,
        workers: int, threads: int | None, shard: Shard, run_root: str, results_dir: str, aggregate_only: bool,
        kl_weight: float | None, prior_scale: float | None, recompute_bn: bool) -> None:
    """000 / 001 Table 3: CNN, STN, Gaussian and Gamma P-STN with cpab1d time warps on UCR data sets.

    First σ_p / w are selected per data set on the validation split of repetition 0 (grids
    ``UCR_GRIDS``); then every model runs ``--repetitions`` times at its selected value. With
    ``--shard``, run the array once for the selection and once more for the runs it selects.
    ``--kl-weight`` / ``--prior-scale`` fit the Gamma / Gaussian P-STN at a given value instead (the
    authors' w, say), beside the selected runs, to tell the selection's effect from the model's.
    """
    results = Path(results_dir)
    fixed = {param: value for param, value in (("kl_weight", kl_weight), ("prior_scale", prior_scale))
             if value is not None}
    for param in fixed:
        model = next(m for m, (p, _) in UCR_GRIDS.items() if p == param)
        if model not in models:
            raise click.UsageError(f"--{param.replace('_', '-')} fixes {model}'s {PARAM_SYMBOL[param]}; "
                                   f"add {model} to --models")
    if recompute_bn:  # each finished run fitted with the running BN averages, evaluated again with precise BN
        recompute_precise_bn(_ucr_records(results, datasets, models), run_root, click.echo)
        aggregate_only = True
    train = {"device": device, **({"epochs": epochs} if epochs else {}),
             **({"num_particles": train_samples} if train_samples else {})}
    for _ in range(2):  # the selection, then the runs at the selected values
        select, final, waiting = _ucr_jobs(results, datasets, models, repetitions, train, run_root,
                                           refit_stale=not aggregate_only, fixed=fixed)
        if not sweep(select + final, shard, workers, threads, aggregate_only=aggregate_only):
            return
        if not waiting or aggregate_only:
            break
    click.echo(aggregate_ucr(results, datasets, models, repetitions, epochs, train_samples))


#: Row labels of the paired table (the models of 000 / 001 Table 3).
UCR_LABELS = {"cnn": "CNN", "stn": "STN", "pstn": "Gaussian P-STN", "gamma_pstn": "Gamma P-STN"}


def paired_lines(results: Path, name: str, models: Iterable[str] = UCR_MODELS) -> list[str]:
    """Every model against every other on UCR set ``name``, paired by repetition (each repetition gives
    every model the same split and seed): accuracy, NLL and ECE differences with their standard errors;
    and for the models with a posterior location, the S-draw prediction against the one at μ(x)."""
    by_rep, at_mean = {m: {} for m in models}, {}
    for model in models:
        for path in sorted((results / "ucr" / "runs").glob(f"{model}-{name}-rep*.json")):
            record = json.loads(path.read_text())
            evaluated = as_evaluated(record, has_precise_bn(record))
            by_rep[model][record["fold"]] = evaluated["test"]
            if evaluated.get("test_at_mean"):
                at_mean.setdefault(model, {})[record["fold"]] = evaluated["test_at_mean"]
    lines = [f"## {name}: differences paired by repetition (mean, standard error, pairs)", "",
             *paired_table(by_rep, UCR_LABELS)]
    if at_mean:
        lines += ["", "Test-time averaging, S draws of θ − the classifier at μ(x), paired by repetition:", "",
                  "| model | accuracy | NLL | ECE |", "|---|---|---|---|"]
        for model, means in at_mean.items():
            cells = [paired_cell(paired({k: m[metric] for k, m in by_rep[model].items()},
                                        {k: m[metric] for k, m in means.items()})) for metric in ("accuracy", "nll", "ece")]
            lines.append(f"| {UCR_LABELS.get(model, model)} | " + " | ".join(cells) + " |")
    return lines


@click.command("paired", cls=SafeCommand)
@click.option("--datasets", type=CommaList(str), default="PhalangesOutlinesCorrect", show_default=True)
@click.option("--results-dir", type=click.Path(file_okay=False), default=str(RESULTS), show_default=True)
def paired_command(datasets: list[str], results_dir: str) -> None:
    """Print every model against every other on UCR sets, paired by repetition (from the result files)."""
    for name in datasets:
        if not list((Path(results_dir) / "ucr" / "runs").glob(f"*-{name}-rep*.json")):
            raise click.BadParameter(f"no repetitions of {name!r} under {Path(results_dir) / 'ucr' / 'runs'}: run "
                                     f"`python -m experiments.reproduce ucr --datasets {name}` first", param_hint="--datasets")
        click.echo("\n".join(paired_lines(Path(results_dir), name)) + "\n")


def _ucr_records(results: Path, datasets: Iterable[str], models: Iterable[str]) -> list[Path]:
    """The per-run result files (selection and repetitions) of ``models`` on ``datasets``."""
    return sorted(p for kind in ("select", "runs", "fixed") for p in (results / "ucr" / kind).glob("*.json")
                  if any(p.name.startswith(f"{m}-{n}-") for m in models for n in datasets))


def _ucr_precise_bn_lines(results: Path, models: Iterable[str], name: str, repetitions: int) -> list[str]:
    """The runs of ``name`` evaluated again with precise BN (``--recompute-bn``): per model, the test
    metrics with precise BN beside the accuracy with training's running averages, over the same
    repetitions, and their paired difference; and what the validation selection picks with precise BN."""
    rows, picks = [], []
    for model in models:
        runs = [r for k in range(repetitions) if (p := ucr_path(results, "runs", model, name, f"rep{k}")).exists()
                and "precise_bn" in (r := json.loads(p.read_text()))]
        if model in UCR_GRIDS and (value := _ucr_selected(results, model, name)) is not None:
            runs = [r for r in runs if fitted_at(r["config"], UCR_GRIDS[model][0]) == value]
        if runs:
            running = [r["test"]["accuracy"] for r in runs]
            precise = [r["precise_bn"]["test"] for r in runs]
            rows.append(f"| {model} | {len(runs)} | {mean_std(running)} | {mean_std([m['accuracy'] for m in precise])} | "
                        f"{differences([m['accuracy'] - a for m, a in zip(precise, running)])} | "
                        f"{mean_std([m['nll'] for m in precise])} | {mean_std([m['ece'] for m in precise])} |")
        seen = _ucr_selection_runs(results, model, name) if model in UCR_GRIDS else {}
        if seen and len(seen) == len(UCR_GRIDS[model][1]) and all("precise_bn" in r for r in seen.values()):
            param, val = UCR_GRIDS[model][0], {v: r["precise_bn"]["val"] for v, r in seen.items()}
            running = {v: r["val"] for v, r in seen.items()}
            grid = "; ".join(f"{v:g}: {running[v]['accuracy']:.4f} → {m['accuracy']:.4f}" for v, m in val.items())
            picks.append(f"- {model} selection, validation accuracy with running → precise BN by "
                         f"{PARAM_SYMBOL[param]}: {grid}; selected {PARAM_SYMBOL[param]} = {best_on_validation(val):g} "
                         f"with precise BN, {best_on_validation(running):g} with the running averages.")
    if not rows and not picks:
        return []
    lines = ["", f"### {name}: running against precise BN", "",
             "The runs fitted with training's running BN averages whose checkpoints were here, evaluated again with "
             "their batch-norm statistics recomputed over the training split (`--recompute-bn`; "
             "`inference/batchnorm.py`). Difference: precise − running, per repetition (mean ± std, how many > 0).",
             ""]
    if rows:
        lines += ["| model | reps | accuracy, running BN | accuracy, precise BN | difference | NLL, precise BN | "
                  "ECE, precise BN |", "|---|---:|---|---|---|---|---|", *rows]
    return lines + ([""] + picks if picks else [])


def _ucr_jobs(results: Path, datasets: Iterable[str], models: Iterable[str], repetitions: int, train: dict, run_root: str,
              refit_stale: bool, fixed: dict[str, float] | None = None):
    """(selection jobs, final jobs, models still waiting for their selection) of ``reproduce ucr``;
    ``refit_stale``: remove the result of a repetition fitted at another value than the selected one;
    ``fixed`` ({param: value}, ``--kl-weight`` / ``--prior-scale``): the models with that parameter
    skip the selection and fit their repetitions at ``value``, into ``ucr/fixed/``."""
    fixed = fixed or {}
    select, final, waiting = [], [], []
    for name in datasets:
        data = f"ucr/{name}"

        def repetitions_of(model: str, kind: str, tag: str, job_train: dict, options: dict):
            return [study_run(model, data, k, ucr_path(results, kind, model, name, f"{tag}rep{k}"), run_root,
                     {**job_train, "seed": 42 + k}, options) for k in range(repetitions)]

        for model in models:
            if model not in UCR_GRIDS:
                final += repetitions_of(model, "runs", "", train, {})
                continue
            param, values = UCR_GRIDS[model]
            if param in fixed:
                final += repetitions_of(model, "fixed", f"{param}{fixed[param]:g}-",
                                        *at_value(train, param, fixed[param]))
                continue
            select += [study_run(model, data, 0, ucr_path(results, "select", model, name, f"{param}{v:g}"), run_root,
                        *at_value(train, param, v, {"evaluate_on": "val"})) for v in values]
            value = _ucr_selected(results, model, name)
            if value is None:
                waiting.append(f"{model} on {name}")
                continue
            for k in range(repetitions if refit_stale else 0):  # one at another value (an earlier selection)
                done = ucr_path(results, "runs", model, name, f"rep{k}")
                earlier = fitted_at(json.loads(done.read_text())["config"], param) if done.exists() else value
                if earlier != value:
                    click.echo(f"{done.name} was fitted at {param} = {earlier:g}, not the selected {value:g}: "
                               "fitting it again")
                    done.unlink()
            final += repetitions_of(model, "runs", "", *at_value(train, param, value))
    return select, final, waiting




def _mixed_bn(summary: dict, name: str, model: str, baseline: str) -> str:
    """A warning where the two rows of a difference were evaluated with different BN statistics."""
    a, b = (summary.get(f"{m}-{name}", {}).get("bn") for m in (model, baseline))
    return (f" (not like for like: {model} with {a} BN statistics, {baseline} with {b})"
            if a and b and a != b else "")


def _ucr_fixed_lines(results: Path, summary: dict, models: Iterable[str], name: str) -> list[str]:
    """The repetitions fitted at a fixed σ_p / w (``--prior-scale`` / ``--kl-weight``, e.g. the
    authors' value) rather than the validation's pick: per model and value, their test metrics and
    their accuracy paired by repetition with our CNN's and with the selected row's."""
    lines = []
    for model in models:
        if model not in UCR_GRIDS:
            continue
        param = UCR_GRIDS[model][0]
        by_value: dict[float, list[dict]] = {}
        for path in sorted((results / "ucr" / "fixed").glob(f"{model}-{name}-{param}*-rep*.json")):
            record = json.loads(path.read_text())
            by_value.setdefault(fitted_at(record["config"], param), []).append(record)
        for value, runs in sorted(by_value.items()):
            precise = all(map(has_precise_bn, runs))
            shown = [as_evaluated(r, precise) for r in runs]
            bn = "precise" if precise else "running"
            at_mean = [m["test_at_mean"]["accuracy"] for m in shown if m.get("test_at_mean")]
            by_rep = {r["fold"]: m["test"]["accuracy"] for r, m in zip(runs, shown)}
            pairings = []
            for row, label in ((f"cnn-{name}", "cnn"), (f"{model}-{name}", f"the selected {model}")):
                other = summary.get(row, {})
                if pairs := paired(by_rep, other.get("by_rep", {})):
                    mixed = f", not like for like: {bn} against {other['bn']} BN" if other.get("bn") != bn else ""
                    pairings.append(f"− {label}: {pairs[0]:+.4f} (standard error {pairs[1]:.4f}, {pairs[2]} pairs"
                                  f"{mixed})")
            lines.append(
                f"- {model} at {PARAM_SYMBOL[param]} = {value:g}, fixed (`--{param.replace('_', '-')} {value:g}`), "
                f"not selected: {len(runs)} repetitions, {bn} BN, accuracy {mean_std([m['test']['accuracy'] for m in shown])}"
                + (f" ({mean_std(at_mean)} at μ(x))" if at_mean else "")
                + f", NLL {mean_std([m['test']['nll'] for m in shown])}, ECE {mean_std([m['test']['ece'] for m in shown])}, "
                f"mean wall {statistics.mean(r['wall_seconds'] for r in runs):.0f} s / run"
                + (f"; paired by repetition {'; '.join(pairings)}" if pairings else "") + ".")
    return [""] + lines if lines else []


def _ucr_gaps(summary: dict, name: str) -> list[str]:
    """Each P-STN's accuracy gap over our CNN on ``name`` (difference of the means, with the standard
    error of that difference of two independent means), beside the same gap in the paper that has
    the model (000 for the Gaussian P-STN, 001 for the Gamma P-STN); then, paired by repetition, its
    ECE against our CNN's and its accuracy and ECE against our STN's."""
    cnn = summary.get(f"cnn-{name}", {}).get("accuracy", [])
    lines = []
    for model, paper in (("pstn", "000"), ("gamma_pstn", "001")):
        ours = summary.get(f"{model}-{name}", {}).get("accuracy", [])
        if len(ours) < 2 or len(cnn) < 2:
            continue
        gap = statistics.mean(ours) - statistics.mean(cnn)
        se = math.sqrt(statistics.variance(ours) / len(ours) + statistics.variance(cnn) / len(cnn))
        verdict = ("above our CNN by more than two standard errors" if gap > 2 * se else
                   "below our CNN by more than two standard errors" if gap < -2 * se else
                   "within two standard errors of our CNN")
        # repetition k gives every model the same train / validation split and seed: pair them too
        pairs = paired(summary[f"{model}-{name}"].get("by_rep", {}), summary[f"cnn-{name}"].get("by_rep", {}))
        by_rep = (f"; paired by repetition: {pairs[0]:+.4f} (standard error {pairs[1]:.4f}, {pairs[2]} pairs)"
                  if pairs else "")
        published = PAPER_UCR[paper].get(name, {})
        beside = (f"; paper {paper}: {published[model][0] - published['cnn'][0]:+.4f}" if model in published else "")
        lines.append(f"- {model} − cnn: {gap:+.4f} (standard error {se:.4f}, {len(ours)} and {len(cnn)} "
                     f"repetitions): {verdict}{by_rep}{beside}{_mixed_bn(summary, name, model, 'cnn')}.")
    for model, paper in (("pstn", "000"), ("gamma_pstn", "001")):
        ours = summary.get(f"{model}-{name}", {})
        if ece := paired(ours.get("ece_by_rep", {}), summary.get(f"cnn-{name}", {}).get("ece_by_rep", {})):
            lines.append(f"- {model} − cnn, ECE paired by repetition: {ece[0]:+.4f} (standard error {ece[1]:.4f}, "
                         f"{ece[2]} pairs){_mixed_bn(summary, name, model, 'cnn')}.")
        stn = summary.get(f"stn-{name}", {})
        if acc := paired(ours.get("by_rep", {}), stn.get("by_rep", {})):
            ece = paired(ours.get("ece_by_rep", {}), stn.get("ece_by_rep", {}))
            published = PAPER_UCR[paper].get(name, {})
            beside = (f"; paper {paper} accuracy: {published[model][0] - published['stn'][0]:+.4f}"
                      if model in published and "stn" in published else "")
            lines.append(f"- {model} − stn, paired by repetition: accuracy {acc[0]:+.4f} (standard error "
                         f"{acc[1]:.4f}), ECE {ece[0]:+.4f} (standard error {ece[1]:.4f}), {acc[2]} pairs{beside}"
                         f"{_mixed_bn(summary, name, model, 'stn')}.")
    return [""] + lines if lines else []


def _optional(values: list[float]) -> str:
    return mean_std(values) if values else "—"


def _ucr_columns(name: str) -> list[Column]:
    """The columns of a UCR data set's table: ours over the repetitions (with what the augmentation does:
    how well training fits, how far θ's posterior spreads, the accuracy at μ(x)), then the papers'."""
    def test(key: str):
        return lambda model, row: mean_std([m["test"][key] for m in row["shown"]])

    def paper(which: str):
        return lambda model, row: paper_cell({m: {0: v} for m, v in PAPER_UCR[which].get(name, {}).items()}, model, 0)

    return [
        Column("model", lambda model, row: model),
        Column("selected", lambda model, row: row["chosen"]),
        Column("reps", lambda model, row: str(len(row["runs"])), right=True),
        Column("BN", lambda model, row: row["bn"]),
        Column("accuracy", test("accuracy")),
        Column("accuracy at μ(x)", lambda model, row: _optional(
            [m["test_at_mean"]["accuracy"] for m in row["shown"] if m.get("test_at_mean")])),
        Column("NLL", test("nll")), Column("ECE", test("ece")),
        Column("last-epoch train loss", lambda model, row: mean_std(
            [r["validation"]["loss"] for r in row["runs"] if r.get("validation")]) if row["runs"] else "—"),
        Column("posterior std of θ", lambda model, row: _optional(
            [r["theta_posterior_std"] for r in row["runs"] if r.get("theta_posterior_std") is not None])),
        Column("mean wall s / run", lambda model, row: f"{statistics.mean(r['wall_seconds'] for r in row['runs']):.0f}"
               if row["runs"] else "—", right=True),
        Column("paper 000 T3", paper("000")), Column("paper 001 T3", paper("001")),
    ]


def aggregate_ucr(results: Path, datasets: Iterable[str], models: Iterable[str], repetitions: int, epochs: int | None,
                  train_samples: int | None) -> str:
    """The UCR table of ``datasets`` and every data set of the papers' list (``UCR_SETS``; `not run`
    rows until they are, with the command that fills them in), whatever command rebuilt it last."""
    budget = (f" --epochs {epochs}" if epochs else "") + (f" --train-samples {train_samples}" if train_samples else "")
    command = f"python -m experiments.reproduce ucr{budget}"
    datasets = list(dict.fromkeys([*UCR_SETS, *datasets]))
    lines = ["# UCR time series: test accuracy (mean ± std over repetitions)", "",
             f"Produced by `{command}` (one data set at a time: `--datasets NAME`) from the per-run files in "
             "`experiments/results/ucr/`. cpab1d time warps "
             "(1-D CPAB, 10 cells, 9 dof) for STN and both P-STNs; the authors' networks (anchors.md §1.3) and "
             f"protocol (batch 16, Adam lr {DEFAULT_LR['pstn']:g}, localizer lr × 0.1, no weight decay; the STN at "
             f"lr {DEFAULT_LR['stn']:g}, the authors' STN rate of their MNIST script, as their UCR script trains P-STNs "
             f"only, anchors.md §1.6) with {epochs or 200} epochs and "
             f"S = {train_samples or 10} training samples (the authors: 200 and 10), 10 test samples. σ_p and w "
             "selected on the validation split (25 % of the training file, stratified) of repetition 0. Paper "
             "columns: published values, for comparison only; `—` where a paper has no such row. Last-epoch "
             "train loss: the training objective per series in the last epoch (−ELBO with its w-weighted KL term for "
             "the P-STNs, the cross-entropy for cnn and stn); posterior std "
             "of θ: the std over 200 posterior draws, averaged over θ's 9 dims and the first 16 test series (validation "
             "series in the selection lines) "
             "(`—`: no θ posterior, or a run from before this was recorded). Accuracy at μ(x): the P-STNs' "
             "classifier on the test series warped by the posterior location, with no draws of θ (beside the "
             "10-sample accuracy, it tells what averaging over q(θ|x) at test time adds or costs; `—`: not a P-STN, "
             "or a run from before this was recorded). BN: the batch-norm statistics the row's networks were "
             "evaluated with: `precise`, recomputed over the training split after training (the default since "
             "2026-12-06, `inference/batchnorm.py`; older runs evaluated again from their checkpoints with "
             "`--recompute-bn`), or `running`, training's running averages (runs fitted before, whose checkpoints "
             "are gone); the selection lines say which their validation metrics used.", ""]
    summary = {}
    for name in datasets:
        rows = []
        for model in models:
            runs = [json.loads(p.read_text()) for k in range(repetitions)
                    if (p := ucr_path(results, "runs", model, name, f"rep{k}")).exists()]
            chosen = "—"
            if model in UCR_GRIDS and (value := _ucr_selected(results, model, name)) is not None:
                param = UCR_GRIDS[model][0]
                chosen = f"{PARAM_SYMBOL[param]} = {value:g}"
                runs = [r for r in runs if fitted_at(r["config"], param) == value]  # not an earlier selection's
            precise = bool(runs) and all(map(has_precise_bn, runs))  # one kind of BN statistics per row
            shown = [as_evaluated(r, precise) for r in runs]
            bn = ("precise" if precise else "running") if runs else "—"
            summary[f"{model}-{name}"] = {"reps": len(runs), "accuracy": [m["test"]["accuracy"] for m in shown],
                                          "bn": bn,
                                          "by_rep": {r["fold"]: m["test"]["accuracy"] for r, m in zip(runs, shown)},
                                          "ece_by_rep": {r["fold"]: m["test"]["ece"] for r, m in zip(runs, shown)}}
            rows.append((model, {"chosen": chosen, "bn": bn, "runs": runs, "shown": shown}))
        lines += [f"## {name}", "", *markdown(_ucr_columns(name), rows)]
        lines += _ucr_gaps(summary, name)
        lines += _ucr_fixed_lines(results, summary, models, name)
        lines += _ucr_grid_lines(results, models, name)
        lines += _ucr_precise_bn_lines(results, models, name, repetitions)
        missing = sum(summary[f"{model}-{name}"]["reps"] < repetitions for model in models)
        if missing:
            lines += ["", f"Not run yet ({missing} of {len(models)} models): `{command} --datasets {name}` fills them "
                          "in (it skips finished runs)."]
        if name not in PAPER_UCR["000"]:
            lines += ["", f"{name} is in neither paper's table: no published values to compare with."]
        if (results / f"ucr_{name}.md").exists():  # a written reading of this data set's result
            lines += ["", f"What we measured about why: [ucr_{name}.md](ucr_{name}.md)."]
        lines.append("")
    records = [json.loads(p.read_text()) for kind in ("select", "runs", "fixed")
               for p in (results / "ucr" / kind).glob("*.json") if any(f"-{name}-" in p.name for name in datasets)]
    if records:
        lines += [f"Wall time of these {len(records)} runs (the validation selection and runs at fixed values included): "
                  f"{sum(r['wall_seconds'] for r in records) / 3600:.2f} h in total. Machines: "
                  f"{'; '.join(sorted({r['machine'] for r in records}))}."]
    text = "\n".join(lines) + "\n"
    (results / "ucr").mkdir(parents=True, exist_ok=True)
    write_result(results / "ucr.md", text)
    write_result(results / "ucr.json", json.dumps(summary, indent=2) + "\n")
    return text

