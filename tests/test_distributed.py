"""Data-parallel fitting (issue 15): torch DDP over 2 gloo processes launched by torchrun."""
import json
import os
import subprocess
import sys

import pytest
import torch

from inference.engine import Trainer

from .conftest import REPO
from .ddp_worker import batch, build, config, sgd
from .noise import Noise


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` from the repository root, bounded in time."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def ddp_steps(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun("-m", "tests.ddp_worker", "steps", str(out))
    return out


@pytest.mark.parametrize("name", ["gamma_pstn", "dtvae"])
def test_two_ddp_processes_take_the_sgd_steps_of_one_process_on_the_concatenated_batch(ddp_steps, name):
    """Float64, two SGD steps: each rank fits its half of the batch with its own draws (Pyro seeded
    with seed + rank); one process on the whole batch, replaying both ranks' draws, has the same
    loss, the same gradients and the same parameters. A wrong scale (a sum over the processes, or
    a plate that weights the local batch as the global one) would double the gradients."""
    ranks = [torch.load(ddp_steps / f"{name}-rank{r}.pt") for r in range(2)]
    assert not torch.equal(ranks[0]["draws"][0][-1], ranks[1]["draws"][0][-1])  # seed + rank: different draws
    model = build(name)
    trainer = Trainer(model, config(name))
    trainer.optimizer = sgd(trainer)
    x, y = batch(name)
    noise = Noise()
    for step in range(2):
        # each rank's draws in call order (the first step's list starts with the dry step that finds
        # unused parameters; it restores the random state, so its draws repeat the step's own)
        joint = [torch.cat(pair, dim=-2) for pair in zip(ranks[0]["draws"][step], ranks[1]["draws"][step])]
        with noise.replay(joint):
            loss = trainer.train_step(x, y)
        torch.testing.assert_close(loss, (ranks[0]["losses"][step] + ranks[1]["losses"][step]) / 2, rtol=1e-12, atol=0)
        for (key, p), g0, g1 in zip(model.named_parameters(), ranks[0]["grads"][step], ranks[1]["grads"][step]):
            assert torch.equal(g0, g1), f"{key}: the ranks hold different gradients after DDP's all-reduce"
            torch.testing.assert_close(g0, p.grad, rtol=0, atol=1e-10, msg=f"step {step}: {key}")
        assert any(g.abs().max() > 1e-6 for g in ranks[0]["grads"][step])
    for (key, p), q in zip(model.named_parameters(), ranks[0]["params"]):
        torch.testing.assert_close(q, p.detach(), rtol=0, atol=1e-10, msg=key)


def test_a_torchrun_fit_leaves_a_normal_run_directory(tmp_path, data_root):
    """`torchrun -m experiments.fit`: rank 0 alone writes the run directory of a single run; each
    process trains on half of every epoch (15 of MNIST30's 30 images: 2 steps of 8 per epoch)."""
    result = torchrun("-m", "experiments.fit", "--model", "gamma_pstn", "--data", "mnist30", "--epochs", "2",
                      "--test-size", "200", "--val-size", "100", "--val-every", "1", "--out-dir", str(tmp_path),
                      "--run-name", "ddp", "--data-root", str(data_root), "--no-progress")
    run = tmp_path / "ddp"
    assert sorted(os.listdir(tmp_path)) == ["ddp"]
    assert {"config.json", "checkpoint.pt", "metrics.json", "reliability.png", "augmentations.png",
            "posterior.nc"} <= set(os.listdir(run))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["epochs"] == 2 and metrics["steps"] == 4
    assert metrics["validation"]["val_accuracy"] is not None and 0 <= metrics["test"]["accuracy"] <= 1
    assert result.stdout.count("test accuracy") == 1  # rank 0 alone reports
    from inference.kinds import load_run

    loaded = load_run(run)
    assert loaded.config.model == "gamma_pstn" and loaded.metrics == metrics


def test_a_distributed_run_resumes_to_the_results_of_an_uninterrupted_one(tmp_path, data_root):
    """Interrupted after epoch 1 of 3 and resumed under torchrun: each rank continues its own
    random draws (the checkpoint keeps every rank's generators), so the results are identical."""
    torchrun("-m", "tests.ddp_worker", "resume", str(tmp_path))
    runs = json.loads((tmp_path / "resume.json").read_text())
    straight, resumed = runs["straight"], runs["resumed"]
    assert resumed["test"] == straight["test"] and resumed["final_train_loss"] == straight["final_train_loss"]
    assert resumed["epochs"] == 3 and resumed["processes"] == 2


def test_a_distributed_checkpoint_refuses_another_number_of_processes():
    from inference.distributed import DistributedTrainer

    trainer = Trainer.__new__(DistributedTrainer)
    trainer.world_size = 3
    with pytest.raises(ValueError, match="written by 2 process.*--nproc_per_node 2"):
        trainer.load_state_dict({"rng_ranks": [{}, {}]})
    with pytest.raises(ValueError, match="needs a torch.distributed process group.*torchrun"):
        DistributedTrainer(build("gamma_pstn"), config("gamma_pstn"))


def test_commands_that_are_not_data_parallel_refuse_torchrun(monkeypatch):
    from click.testing import CliRunner

    from experiments import flow, pose_vae, reproduce

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for main, args in ((reproduce.main, ["grid", "--aggregate-only"]), (pose_vae.main, ["study003"]),
                       (flow.main, ["fit"])):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "launch it with python, not torchrun" in result.output


def test_a_stack_under_torchrun_is_refused_with_the_reason(monkeypatch, tmp_path):
    """Issue 34: a stack does not split its members' batches over processes; the refusal says so."""
    from click.testing import CliRunner

    from experiments.fit import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(main, ["--folds", "0,1", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "a torchrun group splits the batch of one run" in " ".join(result.output.split())
    assert not any(tmp_path.iterdir())
