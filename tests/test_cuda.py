"""The CUDA path (issue 15): every model fits a few steps on a GPU, a run resumes there, and the
stacked and DDP (NCCL) paths run. Skipped where this torch build sees no CUDA device; run it
wherever one is lent (`python -m pytest tests/test_cuda.py`) and record the result in
experiments/results/."""
import json
import os
import subprocess
import sys

import pytest
import torch

from experiments.config import authors_config
from inference.engine import TrainConfig, Trainer
from inference.fitting import run_fit, run_fit_stack
from inference.spec import FitConfig
from pyro_pstn.data import ImageSet
from pyro_pstn.models import MODEL_NAMES, POSE_VAE_MODELS, build_pose_vae

from .conftest import REPO
from .interrupt import Interrupt, stop_after

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this torch build / machine")


def _config(model: str, data_root, **train) -> FitConfig:
    return authors_config(model, "mnist30", train={"epochs": 2, "val_every": 1, "checkpoint_every": 1,
                                                             "device": "cuda", **train},
                                   data_root=str(data_root), test_size=200, val_size=100, posterior_draws=8)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_classifier_fits_and_evaluates_on_cuda(model, tmp_path, data_root):
    metrics = run_fit(_config(model, data_root), tmp_path / model, progress=False)
    assert metrics["device"].startswith("cuda") and metrics["steps"] == 8
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics["test"].values())


@pytest.mark.parametrize("name", POSE_VAE_MODELS)
def test_every_pose_vae_takes_steps_on_cuda(name):
    model = build_pose_vae(name, 4, hidden=(32,), localizer_hidden=(16,))
    trainer = Trainer(model, TrainConfig(epochs=2, batch_size=8, kl_weight=1.0, device="cuda", weight_decay=0.0,
                                         localizer_lr_mult=1.0))
    data = ImageSet(torch.rand(32, 1, 28, 28), torch.randint(10, (32,)))
    history = trainer.fit(data, progress=False)
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in history.records)


def test_a_cuda_run_resumes_to_the_results_of_an_uninterrupted_one(tmp_path, data_root):
    config = _config("gamma_pstn", data_root, epochs=3)
    straight = run_fit(config, tmp_path / "straight", progress=False)

    with pytest.raises(Interrupt):
        run_fit(config, tmp_path / "resumed", progress=False, on_epoch_end=stop_after(1))
    resumed = run_fit(config, tmp_path / "resumed", resume=True, progress=False)
    # the CUDA generator is restored too; kernels may differ in the last bits between launches
    assert resumed["final_train_loss"] == pytest.approx(straight["final_train_loss"], rel=1e-4)
    assert resumed["test"]["accuracy"] == pytest.approx(straight["test"]["accuracy"], abs=0.01)


def test_a_stack_fits_on_cuda(tmp_path, data_root):
    configs = [_config("gamma_pstn", data_root, kl_weight=w) for w in (0.0, 1e-3)]
    results = run_fit_stack(configs, [tmp_path / "m0", tmp_path / "m1"], tmp_path / "stack", progress=False)
    assert [r["device"][:4] for r in results] == ["cuda", "cuda"] and all(r["epochs"] == 2 for r in results)


def test_a_torchrun_fit_uses_nccl_with_one_gpu_per_process(tmp_path, data_root):
    processes = min(2, torch.cuda.device_count())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "experiments.fit", "--model", "gamma_pstn", "--data", "mnist30", "--epochs", "2", "--device",
               "cuda", "--test-size", "200", "--val-size", "100", "--out-dir", str(tmp_path), "--run-name", "ddp",
               "--data-root", str(data_root), "--no-progress"]
    result = subprocess.run(command, cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == processes and metrics["device"] == "cuda:0"
