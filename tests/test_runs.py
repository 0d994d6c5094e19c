"""The run layer (inference/runs.py): atomic writes, locks, a run's identity, result files that never
lose numbers; and what the commands do with them (issue 33: every command safe)."""
import json
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from experiments import bench, flow, reproduce
from experiments.fit import main as fit_main
from inference.engine import EpochRecord, History
from inference.flow_runs import FlowConfig, build_model
from inference.runs import RunInUse, atomic, check_output_dir, config_diff, identity, locked, open_run, write_atomic, write_result
from inference.sweep import cached_record

from .conftest import REPO


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "a.json"
    write_atomic(path, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def _hold(path, seconds, ready):
    with locked(path):
        ready.set()
        time.sleep(seconds)


def test_a_locked_run_is_refused_or_waited_for_never_shared(tmp_path):
    run = tmp_path / "run"
    ready = multiprocessing.get_context("spawn").Event()
    holder = multiprocessing.get_context("spawn").Process(target=_hold, args=(run, 2.0, ready))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunInUse, match=f"in use by process {holder.pid}"):
            with locked(run):
                pass
        start = time.perf_counter()
        with locked(run, wait=True):  # blocks until the holder lets go
            assert not holder.is_alive() or time.perf_counter() - start > 0.5
    finally:
        holder.join(30)
    with locked(run):  # a finished holder leaves no stale lock
        pass
    assert not any(tmp_path.iterdir())  # nothing in the run's folder: locks live in the temp folder


def test_config_diff_and_identity():
    stored = {"model": "pstn", "train": {"lr": 1e-3, "seed": 0, "device": "cpu", "threads": 1}, "data_root": "/a"}
    moved = {"model": "pstn", "train": {"lr": 1e-3, "seed": 0, "device": "cuda", "threads": 4}, "data_root": "/b"}
    assert identity(stored) == identity(moved)  # where it ran is not what it computed
    changed = {**moved, "train": {**moved["train"], "lr": 0.5}}
    assert config_diff(identity(stored), identity(changed)) == ["train.lr: 0.001 → 0.5"]
    # a run built on another run names it by its run name, under whichever run root it lies
    frozen = {"alpha": 0.1, "classifier_from": "runs/flow/base-run"}
    assert identity(frozen) == identity({**frozen, "classifier_from": "/elsewhere/base-run"})
    assert identity(frozen) != identity({**frozen, "classifier_from": "runs/flow/other-run"})


def test_open_run_refuses_a_directory_of_another_config(tmp_path):
    assert not open_run(tmp_path / "r", {"lr": 1e-3, "device": "cpu"})
    open_run(tmp_path / "r", {"lr": 1e-3, "device": "cuda"})  # same run elsewhere: fine
    with pytest.raises(ValueError, match=r"lr: 0.001 → 0.5"):
        open_run(tmp_path / "r", {"lr": 0.5, "device": "cpu"})


def test_output_dir_that_is_a_file_or_read_only(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "runs", "--out-dir")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user on a read-only folder
    with pytest.raises(ValueError, match="not writable"):
        check_output_dir(tmp_path / "new", "--out-dir")


def test_a_result_table_never_loses_numbers(tmp_path):
    table = tmp_path / "t.md"
    write_result(table, "| model | acc |\n|---|---|\n| cnn | 0.71 |\n| pstn | 0.76 |\n")
    with pytest.raises(ValueError, match=r"holds 3 results .* with 2"):
        write_result(table, "| model | acc |\n|---|---|\n| cnn | 0.71 |\n| pstn | not run |\n")
    write_result(table, "| model | acc |\n|---|---|\n| cnn | 0.72 |\n| pstn | 0.75 |\n| da | 0.7 |\n")


def test_divergence_is_named():
    def history(*losses, val_nll=None):
        records = [EpochRecord(i + 1, i, loss, 1.0, 0.0) for i, loss in enumerate(losses)]
        records[-1].val_nll, records[-1].val_loss = val_nll, val_nll
        return History(records)

    assert history(2.3, 0.5, 0.01, 0.2, val_nll=0.4).divergence(10) is None
    assert "grew from 2.3" in history(2.3, 40.0).divergence(10)
    assert "uniform guess" in history(9e4, 9e4, val_nll=152.0).divergence(10)


@dataclass
class _Config:
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"

    @property
    def name(self) -> str:  # as the studies' names: not every field is in it
        return "run"


def test_a_study_record_of_another_config_is_refused_not_returned(tmp_path):
    path = tmp_path / "run.json"
    fits = []

    def fit():
        fits.append(1)
        return {"config": {"lr": 1e-3, "seed": 0, "device": "cpu"}, "wall_seconds": 1.0, "acc": 0.9}

    assert cached_record(path, _Config(), fit, str)["acc"] == 0.9
    assert cached_record(path, _Config(device="cuda"), fit, str)["acc"] == 0.9 and len(fits) == 1
    with pytest.raises(ValueError, match=r"lr: 0.001 → 0.5; seed: 0 → 3"):
        cached_record(path, _Config(lr=0.5, seed=3), fit, str)


# ---- commands ------------------------------------------------------------------------------------


def _fit(*args):
    return CliRunner().invoke(fit_main, [str(a) for a in args])


QUICK = ("--model", "cnn", "--data", "mnist30", "--epochs", 1, "--test-size", 100, "--val-size", 50, "--no-progress")


def test_fit_resume_with_changed_options_names_them(tmp_path, data_root):
    assert _fit(*QUICK, "--out-dir", tmp_path, "--run-name", "r", "--data-root", data_root).exit_code == 0
    result = _fit("--resume", tmp_path / "r", "--lr", 0.5, "--epochs", 3)
    assert result.exit_code == 2 and "train.epochs: 1 → 3; train.lr: 0.001 → 0.5" in result.output
    assert "Traceback" not in result.output
    assert _fit("--resume", tmp_path / "r", "--threads", 1).exit_code == 0  # how it runs may change


def test_fit_of_a_run_stopped_before_its_first_checkpoint_restarts(tmp_path, data_root):
    assert _fit(*QUICK, "--out-dir", tmp_path, "--run-name", "r", "--data-root", data_root).exit_code == 0
    (tmp_path / "r" / "checkpoint.pt").unlink()
    again = _fit(*QUICK, "--out-dir", tmp_path, "--run-name", "r", "--data-root", data_root)
    assert again.exit_code == 2 and "no checkpoint yet: --resume starts it again" in again.output
    result = _fit("--resume", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "stopped before its first checkpoint" in result.output and (tmp_path / "r" / "checkpoint.pt").is_file()


def test_a_run_in_use_is_refused(tmp_path, data_root):
    assert _fit(*QUICK, "--out-dir", tmp_path, "--run-name", "r", "--data-root", data_root).exit_code == 0
    with locked(tmp_path / "r"):  # another process resuming it
        result = _fit("--resume", tmp_path / "r")
    assert result.exit_code == 2 and "in use by process" in result.output


def test_a_diverged_fit_is_reported(tmp_path, data_root):
    result = _fit(*QUICK, "--lr", 1e3, "--out-dir", tmp_path, "--data-root", data_root)
    assert result.exit_code == 1 and "the fit diverged" in result.output


def test_ctrl_c_in_a_stacked_fit_says_how_to_resume(tmp_path, data_root, monkeypatch):
    from experiments import fit

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "run_fit_stack", interrupted)
    result = _fit(*QUICK, "--folds", "0,1", "--out-dir", tmp_path, "--data-root", data_root)
    assert result.exit_code == 130 and "continue with: python -m experiments.fit --resume" in result.output


SAFE = [
    (fit_main, ["--out-dir", "{file}/runs"], "is a file, not a folder"),
    (fit_main, ["--lr", "nan"], "nan is not a finite number"),
    (reproduce.main, ["mnist_subsets", "--results-dir", "{file}"], "is a file"),
    (reproduce.main, ["grid", "--values", "0.1,nan"], "'nan' is not a finite number"),
    (reproduce.main, ["ucr", "--datasets", "NoSuchSet", "--results-dir", "{tmp}/r", "--run-root", "{tmp}/runs"],
     "UCR data set 'NoSuchSet' not found"),
    (flow.main, ["fit", "--entropy-target", "nan"], "nan is not a finite number"),
    (bench.main, ["--batch-sizes", "abc"], "'abc' is not an integer"),
    (bench.main, ["--batch-sizes", "0"], "'0' must be ≥ 1"),
    (bench.main, ["--stack", "--members", "0"], "'0' must be ≥ 1"),
    (bench.main, ["--device", "tpu"], "unknown device 'tpu'"),
]


@pytest.mark.parametrize("command, args, message", SAFE, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_mistakes_exit_2_without_a_traceback(tmp_path, data_root, command, args, message):
    (tmp_path / "file").write_text("x")
    args = [a.format(file=tmp_path / "file", tmp=tmp_path) for a in args]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_smoke_sweep_into_the_committed_results_is_refused(tmp_path):
    result = CliRunner().invoke(reproduce.main, ["mnist_subsets", "--sizes", "10", "--epochs", "1",
                                                 "--run-root", str(tmp_path)])
    assert result.exit_code == 2 and "train.epochs: 600 → 1" in result.output and "--results-dir" in result.output
    assert not any(tmp_path.iterdir())


def test_flow_classifier_from_a_run_of_fit_is_a_clear_error(tmp_path, data_root):
    assert _fit(*QUICK, "--out-dir", tmp_path, "--run-name", "cnn", "--data-root", data_root).exit_code == 0
    config = FlowConfig(data="mario_iggy90", classifier_from=str(tmp_path / "cnn"), train=dict(epochs=1))
    with pytest.raises(ValueError, match="its classifier does not fit this model's SimpleConv"):
        build_model(config, 1, 2)


def test_help_lists_each_subcommand_by_its_whole_first_line():
    result = CliRunner().invoke(flow.main, ["--help"])
    line = next(line for line in result.output.splitlines() if line.strip().startswith("discover"))
    assert not line.rstrip().endswith("Fig.")


def test_two_sweeps_on_one_results_directory_both_end_correctly(tmp_path, data_root):
    """Two processes run the same sweep into one results folder at once: each run is fitted once (the
    second waits for the first's runs, or fits the ones the first has not reached), nothing is
    deleted under the other, and both write the full table."""
    args = [sys.executable, "-m", "experiments.reproduce", "mnist_subsets", "--sizes", "10", "--folds", "0,1",
            "--models", "cnn", "--epochs", "2", "--test-size", "100", "--results-dir", str(tmp_path / "results"),
            "--threads", "1"]
    env = {**os.environ, "PYRO_PSTN_DATA": str(data_root)}
    procs = [subprocess.Popen([*args, "--run-root", str(tmp_path / f"runs{i}")], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    table = (tmp_path / "results" / "mnist_subsets.md").read_text()
    assert "| cnn | 2 |" in table
    records = [json.loads(f.read_text()) for f in sorted((tmp_path / "results" / "mnist_subsets" / "runs").iterdir())]
    assert [r["fold"] for r in records] == [0, 1]
    fitted = sum(out.count("done cnn-mnist10") for out in outputs)
    assert fitted >= 2  # each run reported by whichever sweep fitted (or waited for) it


def _write_series(path, labels, length=30):
    rows = [f"{y}\t" + "\t".join(f"{0.1 * ((i * 7 + t) % 13):.2f}" for t in range(length)) for i, y in enumerate(labels)]
    path.write_text("\n".join(rows) + "\n")


def test_data_files_that_cannot_train_a_classifier_exit_2(tmp_path):
    import numpy as np

    np.savez(tmp_path / "odd.npz", images=np.zeros((40, 28, 28), np.float32), labels=np.arange(40) % 2,
             test_images=np.zeros((10, 28, 27), np.float32), test_labels=np.arange(10) % 2)
    _write_series(tmp_path / "one_TRAIN.tsv", [1] * 20)
    _write_series(tmp_path / "short_TRAIN.tsv", [0, 1] * 10, length=2)
    _write_series(tmp_path / "unseen_TRAIN.tsv", [0, 1] * 10)
    _write_series(tmp_path / "unseen_TEST.tsv", [0, 1, 2] * 3)
    cases = {"odd.npz": "test examples (1, 28, 27) differ from training examples (1, 28, 28)",
             "one_TRAIN.tsv": "every series has the label '1'",
             "short_TRAIN.tsv": "series of 2 values are too short",
             "unseen_TRAIN.tsv": "test label(s) '2' never occur in unseen_TRAIN.tsv"}
    for name, message in cases.items():
        result = _fit("--data", tmp_path / name, "--epochs", 1, "--out-dir", tmp_path / "runs")
        assert result.exit_code == 2 and message in result.output, (name, result.output)
    assert not (tmp_path / "runs").exists()


def test_a_list_of_results_counts_too(tmp_path):
    listing = tmp_path / "study.md"
    write_result(listing, "- [a](a.png): ELBO -88.1\n- [b](b.png): ELBO -79.3\n")
    with pytest.raises(ValueError, match="holds 2 results .* with 1"):
        write_result(listing, "- [a](a.png): ELBO -88.1\n- b: not run\n")


def test_the_placement_study_rebuilds_from_its_committed_result_files(tmp_path):
    """localize placement --aggregate-only: the committed table again, from the committed records alone
    (no run directories: the figures stay as committed)."""
    import shutil

    from experiments import localize

    results = tmp_path / "results"
    shutil.copytree(REPO / "experiments" / "results" / "localization", results / "localization")
    committed = REPO / "experiments" / "results" / "localization_placed_fashion_mnist.md"
    shutil.copy(committed, results)
    result = CliRunner().invoke(localize.main, ["placement", "--epochs", "10", "--aggregate-only", "--results-dir",
                                                str(results), "--run-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert (results / committed.name).read_text() == committed.read_text()
    missing = CliRunner().invoke(localize.main, ["placement", "--epochs", "3", "--aggregate-only", "--results-dir",
                                                 str(results), "--run-root", str(tmp_path / "runs")])
    assert missing.exit_code == 2 and "run the command without --aggregate-only" in missing.output
