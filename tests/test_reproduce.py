import json
import math
import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest
import torch
from click.testing import CliRunner

from experiments.reproduce import main

from .conftest import REPO


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_mnist_subsets_sweep_keeps_per_run_files_resumes_and_aggregates(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    common = ["mnist_subsets", "--sizes", "30", "--models", "cnn,gamma_pstn", "--epochs", 1, "--test-size", 100,
              "--results-dir", tmp_path / "results", "--run-root", tmp_path / "runs"]
    first = _invoke(*common, "--folds", "0,1", "--workers", 2)
    assert first.exit_code == 0, first.output
    runs = sorted((tmp_path / "results" / "mnist_subsets" / "runs").glob("*.json"))
    assert [p.name for p in runs] == [
        "cnn-mnist30-fold0.json", "cnn-mnist30-fold1.json", "gamma_pstn-mnist30-fold0.json", "gamma_pstn-mnist30-fold1.json",
    ]
    record = json.loads(runs[0].read_text())
    assert record["config"]["train"]["epochs"] == 1 and set(record["test"]) == {"accuracy", "nll", "ece", "brier"}
    # a second call skips the finished runs and only adds fold 2
    second = _invoke(*common, "--folds", "0,1,2")
    assert "2 runs to do" in second.output
    table = (tmp_path / "results" / "mnist_subsets.md").read_text()
    assert "| gamma_pstn | 3 |" in table and "0.8100 ± 0.0392" in table  # paper 001 beside ours
    assert "Not the full protocol" in table and "Not run yet (29 of 35)" in table and "## MNIST10000" in table
    # one command per layout: the paper rows and the diffeomorphic (cpab) rows cannot share a --layout
    assert ("`python -m experiments.reproduce mnist_subsets --sizes 10000 --models cnn,stn,da,pstn,gamma_pstn` and "
            "`python -m experiments.reproduce mnist_subsets --sizes 10000 --models stn,pstn --layout cpab` fill them in"
            in table)
    # the papers' rows (000's diffeo rows too) are there whatever the command asked for, in one order
    mnist30 = table.split("## MNIST30")[1].split("## MNIST100")[0]
    assert [line.split(" | ")[0][2:] for line in mnist30.splitlines() if line.startswith("| ") and "---" not in line
            ][1:] == ["cnn", "stn", "da", "pstn", "gamma_pstn", "stn-cpab", "pstn-cpab"]
    assert "No validation selection at this size for pstn, gamma_pstn" in table and "Wall time of these 6 runs" in table
    assert "Gamma P-STN (3 folds) against paper 001's mean − one std (0.8100 − 0.0392 = 0.7708)" in table
    summary = json.loads((tmp_path / "results" / "mnist_subsets.json").read_text())
    assert summary["cnn-mnist30"]["folds"] == [0, 1, 2]


def test_grid_selects_on_the_validation_split(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    result = _invoke("grid", "--param", "kl_weight", "--size", "30", "--values", "0,0.001", "--folds", "0",
                     "--epochs", 1, "--results-dir", tmp_path, "--run-root", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "grid" / "runs" / "gamma_pstn-mnist30-kl_weight0.001-fold0.json").read_text())
    assert record["evaluated_on"] == "val" and "test" not in record
    assert record["config"]["train"]["kl_weight"] == 0.001 and record["config"]["val_size"] is None
    summary = json.loads((tmp_path / "grid_kl_weight_gamma_pstn_mnist30.json").read_text())
    assert summary["best_accuracy"] in (0.0, 0.001) and set(summary["values"]) == {"0", "0.001"}
    assert "best accuracy" in (tmp_path / "grid_kl_weight_gamma_pstn_mnist30.md").read_text()
    # a call over part of the grid keeps every value run before in the grid file (two concurrent
    # --values subsets of one grid must not each select among their own values)
    part = _invoke("grid", "--param", "kl_weight", "--size", "30", "--values", "0", "--folds", "0", "--aggregate-only",
                   "--results-dir", tmp_path)
    assert part.exit_code == 0, part.output
    again = json.loads((tmp_path / "grid_kl_weight_gamma_pstn_mnist30.json").read_text())
    assert set(again["values"]) == {"0", "0.001"} and again["best_accuracy"] == summary["best_accuracy"]


def test_module_entry_point_has_every_command():
    import subprocess
    import sys

    from .conftest import REPO

    out = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert all(command in out for command in ("mnist_subsets", "grid", "calibration", "ucr", "ablation"))


def test_calibration_study_uses_the_grid_selection(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    missing = _invoke("calibration", "--size", "30", "--results-dir", tmp_path)
    assert missing.exit_code == 2 and "grid --param kl_weight --size 30" in missing.output
    (tmp_path / "grid_kl_weight_gamma_pstn_mnist30.json").write_text(json.dumps({"best_accuracy": 3e-4, "best_ece": 1e-4}))
    result = _invoke("calibration", "--size", "30", "--folds", "0", "--prior-scales", "0.1", "--epochs", 1,
                     "--results-dir", tmp_path, "--run-root", tmp_path / "runs", "--workers", 2)
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in (tmp_path / "calibration" / "runs").glob("*.json"))
    assert len(runs) == 5 and "mnist30-gamma_pstn-w_ece-fold0.json" in runs
    record = json.loads((tmp_path / "calibration" / "runs" / "mnist30-gamma_pstn-w_ece-fold0.json").read_text())
    assert record["config"]["train"]["kl_weight"] == 1e-4
    table = (tmp_path / "calibration_mnist30.md").read_text()
    assert "| pstn, σ_p = 0.1 | 1 |" in table and "0.0271 ± 0.0088" in table
    assert (tmp_path / "calibration_mnist30.png").stat().st_size > 1000


def test_selected_rows_use_the_validation_grid_choice(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    common = ["mnist_subsets", "--sizes", "30", "--folds", "0", "--models", "gamma_pstn", "--selected", "--epochs", 1,
              "--test-size", 50, "--results-dir", tmp_path, "--run-root", tmp_path / "runs"]
    missing = _invoke(*common)
    assert missing.exit_code == 2 and "grid --param kl_weight --size 30" in missing.output
    (tmp_path / "grid_kl_weight_gamma_pstn_mnist30.json").write_text(json.dumps({"best_accuracy": 3e-5, "best_ece": 0}))
    result = _invoke(*common)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "mnist_subsets" / "runs" / "gamma_pstn@val-mnist30-fold0.json").read_text())
    assert record["model"] == "gamma_pstn" and record["config"]["train"]["kl_weight"] == 3e-5
    table = (tmp_path / "mnist_subsets.md").read_text()
    assert "| gamma_pstn, w = 3e-05 selected on validation | 1 |" in table
    assert "| gamma_pstn | 0 | not run |" in table  # the authors'-value row stays separate
    # the resume command of a missing selected run carries --selected; no "no selection" line where one was made
    assert "--sizes 30 --selected --models gamma_pstn` fills them in" in table
    assert "No validation selection at this size for gamma_pstn" not in table
    assert "Wall time of these 1 runs" in table


def test_a_sweep_worker_killed_mid_run_leaves_no_result_and_the_rerun_finishes_it(tmp_path, data_root):
    """kill -9 of a worker: the sweep says so (exit 1), writes no result file, and the same
    command again resumes the run from its last checkpoint and finishes it."""
    results, runs = tmp_path / "results", tmp_path / "runs"
    command = [sys.executable, "-m", "experiments.reproduce", "mnist_subsets", "--sizes", "30", "--folds", "0",
               "--models", "cnn", "--epochs", "200", "--test-size", "100", "--workers", "1", "--threads", "1",
               "--results-dir", str(results), "--run-root", str(runs)]
    env = {**os.environ, "PYRO_PSTN_DATA": str(data_root)}
    sweep = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = runs / "cnn-mnist30-fold0" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():  # the first checkpoint (epoch 10 of 200): the run is under way
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[0]
        time.sleep(0.02)
    workers = [p for p in psutil.Process(sweep.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 1
    workers[0].kill()  # SIGKILL
    output = sweep.communicate(timeout=60)[0]
    assert sweep.returncode == 1 and "a worker process died in the middle of a run" in output
    assert not (results / "mnist_subsets" / "runs").exists() or not any((results / "mnist_subsets" / "runs").iterdir())
    state = torch.load(checkpoint, weights_only=False)
    killed_at = state["epoch"]
    assert 10 <= killed_at < 200
    # say the first segment trained for an hour (as one cut by the end of a session would)
    state["history"]["train_seconds"] += 3600.0
    torch.save(state, checkpoint)

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    record = json.loads((results / "mnist_subsets" / "runs" / "cnn-mnist30-fold0.json").read_text())
    assert record["resumed"] is True and record["config"]["train"]["epochs"] == 200
    assert 3600 < record["wall_seconds"] < 3600 + 300  # both segments, not only the one that finished it
    assert json.loads((runs / "cnn-mnist30-fold0" / "metrics.json").read_text())["epochs"] == 200


def test_stacked_sweeps_leave_the_result_files_of_single_runs(tmp_path, data_root, monkeypatch):
    """Issue 12: --stack trains the folds of a model (and a grid's folds × values) as one fit; every
    member leaves a result file of the single-run format, and the sweep stays resumable run by run."""
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    common = ["mnist_subsets", "--sizes", "30", "--models", "stn", "--epochs", 2, "--test-size", 100,
              "--results-dir", tmp_path / "results", "--run-root", tmp_path / "runs"]
    stacked = _invoke(*common, "--folds", "0,1", "--stack", 5)
    assert stacked.exit_code == 0, stacked.output
    assert "2 runs to do as 1 fit(s)" in stacked.output and "a 1/2 share of a stack" in stacked.output
    alone = _invoke(*common, "--folds", "0,1,2")
    assert "1 runs to do as 1 fit(s)" in alone.output
    runs = tmp_path / "results" / "mnist_subsets" / "runs"
    records = [json.loads((runs / f"stn-mnist30-fold{f}.json").read_text()) for f in range(3)]
    assert [r["stacked"] for r in records] == [2, 2, 1] and [r["fold"] for r in records] == [0, 1, 2]
    assert set(records[0]) == set(records[2]) and set(records[0]["config"]) == set(records[2]["config"])
    assert records[0]["test"] != records[1]["test"]
    grid = _invoke("grid", "--param", "prior_scale", "--size", "30", "--values", "0.1,0.2", "--folds", "0",
                   "--epochs", 1, "--stack", 2, "--results-dir", tmp_path, "--run-root", tmp_path / "grid-runs")
    assert grid.exit_code == 0 and "2 runs to do as 1 fit(s)" in grid.output
    for value in (0.1, 0.2):
        record = json.loads((tmp_path / "grid" / "runs" / f"pstn-mnist30-prior_scale{value:g}-fold0.json").read_text())
        assert record["config"]["prior_scale"] == value and record["evaluated_on"] == "val" and record["stacked"] == 2


def test_the_ablation_moves_one_factor_per_row_and_reports_paired_differences(tmp_path, data_root, monkeypatch):
    """Issue 16: each factor's runs carry exactly its change from our defaults (and build the model
    that says), the folds of a factor stack, and Δ is the per-fold difference from ``ours``."""
    from inference.kinds import load_run

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    result = _invoke("ablation", "--sizes", 30, "--factors", "ours,authors", "--folds", "0,1", "--epochs", 1,
                     "--test-size", 200, "--stack", 2, "--results-dir", tmp_path, "--run-root", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "4 runs to do as 2 fit(s)" in result.output
    runs = tmp_path / "ablation" / "runs"
    rec = {f"{factor}{fold}": json.loads((runs / f"{factor}-gamma_pstn-mnist30-fold{fold}.json").read_text())
           for factor in ("ours", "authors") for fold in (0, 1)}
    settings = {k: (r["config"]["layout"], r["config"]["fill"], r["config"]["train"]["elbo"]) for k, r in rec.items()}
    assert settings["ours0"] == ("similarity", "background", "trace")
    assert settings["authors1"] == ("uai_similarity", "zero", "meanfield")
    model = load_run(tmp_path / "runs" / "authors-gamma_pstn-mnist30-fold0").model
    ours = load_run(tmp_path / "runs" / "ours-gamma_pstn-mnist30-fold0").model
    assert model.fill == 0.0 and model.layout.name == "uai_similarity" and ours.fill < -0.4
    table = json.loads((tmp_path / "ablation_gamma_pstn.json").read_text())
    deltas = [rec[f"authors{f}"]["test"]["nll"] - rec[f"ours{f}"]["test"]["nll"] for f in (0, 1)]
    assert abs(table["authors-mnist30"]["delta_nll"]["mean"] - sum(deltas) / 2) < 1e-12
    text = (tmp_path / "ablation_gamma_pstn.md").read_text()
    assert "| `authors` | 2 |" in text and "Not the full protocol" in text and "0.8100 ± 0.0392" in text


def test_an_unfinished_grid_selects_nothing(tmp_path):
    from experiments.reproduce import aggregate_grid, grid_path

    for value, acc in ((0.0, 0.90), (1e-4, 0.95)):
        for fold in (0, 1) if value == 0.0 else (0,):
            path = grid_path(tmp_path, "kl_weight", "gamma_pstn", 1000, value, fold)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"val": {"accuracy": acc, "nll": 0.3, "ece": 0.02}, "wall_seconds": 10.0,
                                        "stacked": 2, "machine": "test"}))
    table = aggregate_grid(tmp_path, "kl_weight", "gamma_pstn", 1000, [0.0, 1e-4], folds=[0, 1])
    assert "**Unfinished**: 3 of 4 runs" in table and "best accuracy" not in table
    summary = json.loads((tmp_path / "grid_kl_weight_gamma_pstn_mnist1000.json").read_text())
    assert summary["complete"] is False and summary["best_accuracy"] is None
    result = _invoke("mnist_subsets", "--sizes", "1000", "--models", "gamma_pstn", "--selected", "--results-dir", tmp_path)
    assert result.exit_code == 2 and "the grid is unfinished" in result.output


# ---- sweeps on cluster arrays (issue 15) --------------------------------------------------------

def test_shards_are_disjoint_contiguous_and_cover_every_run_once():
    from inference.sweep import Shard

    for n_runs in (0, 1, 7, 25, 40):
        runs = list(range(n_runs))
        for count in (1, 2, 3, 5, 8):
            parts = [Shard(i, count).select(runs) for i in range(count)]
            assert sum(parts, []) == runs  # in order: disjoint, contiguous blocks, every run once
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # 5 models × 5 folds in 5 shards: one model's folds per shard, so each shard is one stack of 5
    runs = [(model, fold) for model in "abcde" for fold in range(5)]
    assert {m for m, _ in Shard(2, 5).select(runs)} == {"c"}


SWEEP = ["mnist_subsets", "--sizes", "30", "--models", "cnn", "--folds", "0,1,2", "--epochs", "1", "--test-size", "100"]


def _sweep_results(results):
    runs = {p.name: json.loads(p.read_text())["test"] for p in sorted((results / "mnist_subsets" / "runs").glob("*.json"))}
    return runs, json.loads((results / "mnist_subsets.json").read_text())["cnn-mnist30"]


def test_a_two_shard_array_of_the_sbatch_script_leaves_the_results_of_one_unsharded_sweep(tmp_path, data_root,
                                                                                       monkeypatch):
    """README's SLURM recipe: experiments/sweep_array.sbatch run as array tasks 0 and 1 of 2 (the
    variables SLURM sets), then the table call; the same runs and table as one unsharded sweep."""
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    alone = _invoke(*SWEEP, "--results-dir", tmp_path / "one", "--run-root", tmp_path / "one-runs")
    assert alone.exit_code == 0, alone.output
    sharded = ["--results-dir", str(tmp_path / "two"), "--run-root", str(tmp_path / "two-runs")]
    env = {**os.environ, "PYRO_PSTN_DATA": str(data_root), "SLURM_ARRAY_TASK_COUNT": "2", "PYTHON": sys.executable}
    for task, runs_done in ((0, 1), (1, 3)):
        out = subprocess.run(["bash", REPO / "experiments" / "sweep_array.sbatch", "reproduce", *SWEEP, *sharded],
                             cwd=REPO, env={**env, "SLURM_ARRAY_TASK_ID": str(task)}, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"shard {task}/2 done: {runs_done} of the sweep's 3 runs have results" in out.stdout
        assert not (tmp_path / "two" / "mnist_subsets.md").exists()  # a shard writes no table
    table = _invoke(*SWEEP, *sharded)
    assert "runs to do" not in table.output and (tmp_path / "two" / "mnist_subsets.md").exists()
    runs, accuracy = _sweep_results(tmp_path / "two")
    assert len(runs) == 3 and (runs, accuracy) == _sweep_results(tmp_path / "one")
    missing = subprocess.run(["bash", REPO / "experiments" / "sweep_array.sbatch", "reproduce", *SWEEP], cwd=REPO,
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "submit with sbatch --array" in missing.stderr


def test_submitit_runs_the_array_and_then_the_table(tmp_path, data_root, monkeypatch):
    """`python -m experiments.slurm` with submitit's local cluster: 2 array tasks, then the table."""
    from click.testing import CliRunner

    from experiments.slurm import main as slurm

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    monkeypatch.chdir(REPO)
    args = ["--shards", "2", "--cluster", "local", "--cpus", "1", "--log-dir", str(tmp_path / "logs"), "--",
            "reproduce", *SWEEP[:6], "0,1", *SWEEP[7:], "--results-dir", str(tmp_path / "r"), "--run-root",
            str(tmp_path / "runs")]
    result = CliRunner().invoke(slurm, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "submitted 2 array task(s)" in result.output and "every task has finished" in result.output
    summary = json.loads((tmp_path / "r" / "mnist_subsets.json").read_text())
    assert summary["cnn-mnist30"]["folds"] == [0, 1]
    bad = CliRunner().invoke(slurm, ["--shards", "2", "--", "reproduce", "stacked_vs_single"])
    assert bad.exit_code == 2 and "reproduce mnist_subsets, reproduce grid, reproduce calibration, reproduce ucr" in bad.output
    bad = CliRunner().invoke(slurm, ["--shards", "2", "--", "reproduce", "grid", "--shard", "0/2"])
    assert bad.exit_code == 2 and "leave --shard out" in bad.output


def test_cpab_rows_sit_beside_the_papers_diffeo_rows(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    common = ["mnist_subsets", "--sizes", "10", "--folds", "0", "--epochs", 1, "--test-size", 100,
              "--results-dir", tmp_path, "--run-root", tmp_path / "runs"]
    result = _invoke(*common, "--models", "stn", "--layout", "cpab")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "mnist_subsets" / "runs" / "stn-cpab-mnist10-fold0.json").read_text())
    assert record["config"]["layout"] == "cpab"
    table = (tmp_path / "mnist_subsets.md").read_text()
    assert "| stn-cpab | 1 |" in table and "0.5204 ± 0.0590" in table  # 000 Table 1, diffeo STN
    assert "--models pstn --layout cpab" not in table  # pstn-cpab was not requested
    refused = _invoke(*common, "--models", "cnn", "--layout", "cpab")
    assert refused.exit_code == 2 and "--layout applies to stn, da, pstn and gamma_pstn" in refused.output


def test_ucr_selects_on_validation_then_runs_the_repetitions(tmp_path, data_root, monkeypatch):
    """reproduce ucr (issue 13): σ_p picked on repetition 0's validation split, then each model's
    repetitions at it; the table has the papers' Table 3 values where they exist."""
    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    result = _invoke("ucr", "--datasets", "ItalyPowerDemand", "--models", "cnn,pstn", "--repetitions", 2,
                     "--epochs", 1, "--train-samples", 1, "--results-dir", tmp_path, "--run-root", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    select = sorted(p.name for p in (tmp_path / "ucr" / "select").glob("*.json"))
    assert len(select) == 4 and all(n.startswith("pstn-ItalyPowerDemand-prior_scale") for n in select)
    runs = sorted(p.name for p in (tmp_path / "ucr" / "runs").glob("*.json"))
    assert runs == ["cnn-ItalyPowerDemand-rep0.json", "cnn-ItalyPowerDemand-rep1.json",
                    "pstn-ItalyPowerDemand-rep0.json", "pstn-ItalyPowerDemand-rep1.json"]
    record = json.loads((tmp_path / "ucr" / "runs" / runs[3]).read_text())
    assert record["data"] == "ucr/ItalyPowerDemand" and record["config"]["layout"] == "cpab1d"
    assert record["fold"] == 1 and record["config"]["train"]["seed"] == 43  # repetition 1: its own split and seed
    table = (tmp_path / "ucr.md").read_text()
    assert "| pstn | σ_p = " in table and "| 2 |" in table and "no published values" in table
    # runs fitted with training's running BN averages (as before precise BN) are evaluated again from their
    # checkpoints, beside their own numbers; a run whose checkpoint is gone is named, not evaluated
    assert record["config"]["train"]["precise_bn"]  # the default now
    for stem in ("cnn-ItalyPowerDemand-rep0", "cnn-ItalyPowerDemand-rep1"):
        path = tmp_path / "ucr" / "runs" / f"{stem}.json"
        old = json.loads(path.read_text())
        del old["config"]["train"]["precise_bn"]  # a result from before the field existed
        path.write_text(json.dumps(old))
        config = json.loads((tmp_path / "runs" / stem / "config.json").read_text())
        config["train"]["precise_bn"] = False
        (tmp_path / "runs" / stem / "config.json").write_text(json.dumps(config))
    shutil.rmtree(tmp_path / "runs" / "cnn-ItalyPowerDemand-rep1")
    again = _invoke("ucr", "--datasets", "ItalyPowerDemand", "--models", "cnn,pstn", "--repetitions", 2,
                    "--results-dir", tmp_path, "--run-root", tmp_path / "runs", "--recompute-bn")
    assert again.exit_code == 0, again.output
    assert "1 run(s) without their checkpoint under" in again.output and "cnn-ItalyPowerDemand-rep1" in again.output
    redone = json.loads((tmp_path / "ucr" / "runs" / "cnn-ItalyPowerDemand-rep0.json").read_text())
    assert set(redone["precise_bn"]["test"]) >= {"accuracy", "nll", "ece"} and "test" in redone
    assert "precise_bn" not in json.loads((tmp_path / "ucr" / "runs" / runs[3]).read_text())  # fitted with it
    table = (tmp_path / "ucr.md").read_text()
    assert "### ItalyPowerDemand: running against precise BN" in table and "| cnn | 1 |" in table
    # a row reads one kind of statistics: the cnn's (one repetition evaluated again, one not) the running ones
    assert "| cnn | — | 2 | running |" in table and "| 2 | precise |" in table
    from experiments.ucr import aggregate_ucr

    with pytest.raises(ValueError, match="would replace it with"):  # a table of other models drops measured rows
        aggregate_ucr(tmp_path, ["FaceAll"], ["cnn", "gamma_pstn"], 5, None, None)
    other = tmp_path / "other"
    other.mkdir()
    (other / "ucr_FaceAll.md").write_text("# FaceAll: a reading\n")
    text = aggregate_ucr(other, ["FaceAll"], ["cnn", "gamma_pstn"], 5, None, None)
    assert text.count("What we measured about why: [ucr_FaceAll.md](ucr_FaceAll.md).") == 1  # FaceAll's only
    assert "0.8431 ± 0.0075" in text and "0.7969 ± 0.0189" in text  # 001 and 000 Table 3, FaceAll
    # the papers' data sets stay in the table, not run, with the command that runs them
    assert "Not run yet (2 of 2 models): `python -m experiments.reproduce ucr --datasets FaceAll` fills" in text
    assert "## OSULeaf" in text and "## ItalyPowerDemand" in text
    assert "- pstn − cnn: " in table and "- gamma_pstn − cnn" not in table  # no Gamma P-STN runs
    from experiments.ucr import _ucr_gaps

    gaps = _ucr_gaps({"cnn-FaceAll": {"accuracy": [0.80, 0.81]}, "gamma_pstn-FaceAll": {"accuracy": [0.84, 0.85]}},
                     "FaceAll")
    assert gaps[1] == ("- gamma_pstn − cnn: +0.0400 (standard error 0.0071, 2 and 2 repetitions): above our CNN by "
                       "more than two standard errors; paper 001: +0.0348.")
    # repetitions share their split and seed across models: the paired differences, over the reps both have
    paired = _ucr_gaps({"cnn-FaceAll": {"accuracy": [0.80, 0.81, 0.9], "by_rep": {0: 0.80, 1: 0.81, 2: 0.9}},
                        "pstn-FaceAll": {"accuracy": [0.82, 0.84], "by_rep": {0: 0.82, 1: 0.84}}}, "FaceAll")
    assert "; paired by repetition: +0.0250 (standard error 0.0050, 2 pairs); paper 000: +0.0217." in paired[1]
    # and against our STN, accuracy and ECE paired, with the paper's accuracy gap to its STN
    against_stn = _ucr_gaps({"stn-FaceAll": {"accuracy": [0.85, 0.83], "by_rep": {0: 0.85, 1: 0.83},
                                             "ece_by_rep": {0: 0.10, 1: 0.12}},
                             "pstn-FaceAll": {"accuracy": [0.82, 0.84], "by_rep": {0: 0.82, 1: 0.84},
                                              "ece_by_rep": {0: 0.05, 1: 0.05}}}, "FaceAll")
    assert against_stn == ["", "- pstn − stn, paired by repetition: accuracy -0.0100 (standard error 0.0200), ECE "
                               "-0.0600 (standard error 0.0100), 2 pairs; paper 000 accuracy: +0.0172."]
    # rows evaluated with different BN statistics say so
    mixed = _ucr_gaps({"stn-FaceAll": {"by_rep": {0: 0.85, 1: 0.83}, "ece_by_rep": {0: 0.1, 1: 0.1}, "bn": "precise"},
                       "pstn-FaceAll": {"by_rep": {0: 0.82, 1: 0.84}, "ece_by_rep": {0: 0.1, 1: 0.1}, "bn": "running"}},
                      "FaceAll")
    assert mixed[1].endswith("(not like for like: pstn with running BN statistics, stn with precise).")


def test_confidence_reevaluates_grid_checkpoints_at_mu_and_with_draws(tmp_path, data_root, monkeypatch):
    """Issue 16: experiments.confidence reads the grid's checkpoints (nothing trained), measures each
    at μ(x) and with S draws on the validation split, keeps per-run files and reads them back."""
    from experiments.confidence import main as confidence
    from experiments.fit import main as fit

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    # what `grid --param prior_scale --size 30 --values 0.3 --folds 0` leaves, on a small validation split
    stem = "pstn-mnist30-prior_scale0.3-fold0"
    run = CliRunner().invoke(fit, ["--model", "pstn", "--data", "mnist30", "--epochs", "1", "--prior-scale", "0.3",
                                   "--evaluate-on", "val", "--val-size", "64", "--out-dir", str(tmp_path / "runs"),
                                   "--run-name", stem], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    (tmp_path / "grid" / "runs").mkdir(parents=True)
    (tmp_path / "grid" / "runs" / f"{stem}.json").write_text("{}")
    args = ["--size", "30", "--sizes", "30", "--samples", "1,4", "--images", "64", "--results-dir", str(tmp_path),
            "--run-root", str(tmp_path / "runs")]
    first = CliRunner().invoke(confidence, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    record = json.loads((tmp_path / "confidence" / "runs" / "pstn-mnist30-prior_scale0.3-fold0.json").read_text())
    assert record["images"] == 64 and set(record) >= {"mean", "S1", "S4", "posterior_scale", "seconds"}
    assert abs(record["posterior_scale"] / math.log1p(math.exp(-5.0)) - 1) < 0.2  # σ(x), one epoch from softplus(−5)
    assert record["S4"]["nll"] != record["mean"]["nll"]
    table = json.loads((tmp_path / "confidence_mnist30.json").read_text())
    assert table["grid"]["pstn"]["0.3"]["S4"]["ece"] == record["S4"]["ece"]
    again = CliRunner().invoke(confidence, args, catch_exceptions=False)  # read back, not re-evaluated
    assert again.exit_code == 0 and json.loads((tmp_path / "confidence" / "runs" /
                                                "pstn-mnist30-prior_scale0.3-fold0.json").read_text()) == record
    empty = CliRunner().invoke(confidence, ["--size", "100", "--results-dir", str(tmp_path)])
    assert empty.exit_code == 2 and "reproduce grid --param prior_scale --size 100" in empty.output


def test_ucr_selection_breaks_ties_by_validation_nll_and_refits_stale_repetitions(tmp_path):
    """A validation split of 9–16 series ties often: the lower NLL decides. A repetition fitted at an
    earlier selection is left out of the table, and removed (to fit again) only by a sweep."""
    from experiments.ucr import UCR_GRIDS, _ucr_jobs, _ucr_selected, aggregate_ucr, ucr_path

    param, values = UCR_GRIDS["pstn"]
    for value, (accuracy, nll), std in zip(values, [(1.0, 0.03), (0.9, 0.01), (1.0, 0.02), (0.8, 0.5)],
                                           [0.019, 0.0196, 0.0196, None]):
        path = ucr_path(tmp_path, "select", "pstn", "GunPoint", f"{param}{value:g}")
        path.parent.mkdir(parents=True, exist_ok=True)
        spread = {} if std is None else {"theta_posterior_std": std}  # None: a run from before it was recorded
        path.write_text(json.dumps({"val": {"accuracy": accuracy, "nll": nll}, "validation": {"step": 300},
                                    "wall_seconds": 1, "machine": "m", **spread}))
    assert _ucr_selected(tmp_path, "pstn", "GunPoint") == values[2]  # ties with values[0] at 1.0; lower NLL
    stale = ucr_path(tmp_path, "runs", "pstn", "GunPoint", "rep0")
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"config": {"prior_scale": values[0], "train": {}}, "wall_seconds": 1, "machine": "m",
                                 "test": {"accuracy": 0.9, "nll": 0.3, "ece": 0.1}}))
    table = aggregate_ucr(tmp_path, ["GunPoint"], ["pstn"], 1, 1, 1)
    assert "| pstn | σ_p = 0.2 | 0 | — | not run |" in table
    assert ("- pstn selection, validation accuracy / NLL (running BN) / posterior std of θ by σ_p (4 of 4 run, 300 optimiser "
            "steps each): 0.05: 1.0000 / 0.0300 / 0.0190; 0.1: 0.9000 / 0.0100 / 0.0196; 0.2: 1.0000 / 0.0200 / 0.0196; "
            "0.6: 0.8000 / 0.5000 / —.") in table  # what the choice saw, and whether σ_p changed the posterior
    _ucr_jobs(tmp_path, ["GunPoint"], ["pstn"], 1, {}, "runs", refit_stale=False)
    assert stale.exists()  # --aggregate-only removes nothing
    _, final, _ = _ucr_jobs(tmp_path, ["GunPoint"], ["pstn"], 1, {}, "runs", refit_stale=True)
    assert not stale.exists() and final[0].result_file == stale and final[0].config.prior_scale == values[2]
    # once every selection run is evaluated again with precise BN (--recompute-bn), those metrics select
    for k, value in enumerate(values):
        path = ucr_path(tmp_path, "select", "pstn", "GunPoint", f"{param}{value:g}")
        record = json.loads(path.read_text())
        record["precise_bn"] = {"val": {"accuracy": 0.95 if k == 3 else 0.9, "nll": 0.1}}
        path.write_text(json.dumps(record))
        assert _ucr_selected(tmp_path, "pstn", "GunPoint") == (values[3] if k == 3 else values[2])


def test_ucr_at_a_fixed_value_skips_the_selection_and_pairs_with_the_selected_row(tmp_path, data_root, monkeypatch):
    """--kl-weight / --prior-scale: repetitions at the authors' value instead of the validation's pick,
    kept beside the selected runs and paired with them and with our CNN by repetition."""
    from experiments.ucr import _ucr_jobs, aggregate_ucr, ucr_path

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    refused = _invoke("ucr", "--datasets", "ItalyPowerDemand", "--models", "cnn", "--kl-weight", "1e-5",
                      "--results-dir", tmp_path)
    assert refused.exit_code == 2 and "--kl-weight fixes gamma_pstn's w; add gamma_pstn to --models" in refused.output
    select, final, waiting = _ucr_jobs(tmp_path, ["FaceAll"], ["gamma_pstn", "pstn"], 2, {}, "runs",
                                       refit_stale=True, fixed={"kl_weight": 1e-5})
    assert {run.config.model for run in select} == {"pstn"} and waiting == ["pstn on FaceAll"]  # σ_p is still selected
    assert [run.result_file.name for run in final] == ["gamma_pstn-FaceAll-kl_weight1e-05-rep0.json",
                                              "gamma_pstn-FaceAll-kl_weight1e-05-rep1.json"]
    assert final[1].result_file.parent.name == "fixed"
    assert (final[1].config.train.kl_weight, final[1].config.train.seed) == (1e-5, 43)

    def record(model, k, accuracy, kl_weight=0.0, precise=True):
        return {"fold": k, "config": {"prior_scale": 0.1, "train": {"kl_weight": kl_weight, "precise_bn": precise}},
                "test": {"accuracy": accuracy, "nll": 0.5, "ece": 0.1}, "test_at_mean": {"accuracy": accuracy},
                "wall_seconds": 10, "machine": "m", "validation": {"loss": 1.0, "step": 1}}

    for k, (cnn, selected, fixed) in enumerate([(0.86, 0.82, 0.84), (0.88, 0.83, 0.83), (0.84, 0.80, 0.83)]):
        for kind, model, tag, rec in (("runs", "cnn", f"rep{k}", record("cnn", k, cnn)),
                                      ("runs", "gamma_pstn", f"rep{k}", record("gamma_pstn", k, selected)),
                                      ("fixed", "gamma_pstn", f"kl_weight1e-05-rep{k}",
                                       record("gamma_pstn", k, fixed, 1e-5, precise=k > 0))):
            path = ucr_path(tmp_path, kind, model, "FaceAll", tag)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec))
    table = aggregate_ucr(tmp_path, ["FaceAll"], ["cnn", "gamma_pstn"], 3, 100, 1)
    line = next(x for x in table.splitlines() if x.startswith("- gamma_pstn at w = 1e-05"))
    assert "fixed (`--kl-weight 1e-05`), not selected: 3 repetitions, running BN, accuracy 0.8333 ± 0.0058" in line
    # one repetition without precise BN: the whole group reads running BN, and says it is not like for like
    assert "− cnn: -0.0267 (standard error 0.0120, 3 pairs, not like for like: running against precise BN)" in line
    assert "− the selected gamma_pstn: +0.0167 (standard error 0.0088, 3 pairs, not like for like" in line
    assert "Wall time of these 9 runs" in table
