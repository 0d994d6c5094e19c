import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from experiments.fit import main
from pyro_pstn.models import MODEL_NAMES

from .conftest import REPO


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _quick(tmp_path, data_root, model, name, *extra):
    return _invoke(
        "--model", model, "--data", "mnist30", "--epochs", 2, "--test-size", 200, "--val-size", 100,
        "--out-dir", tmp_path, "--run-name", name, "--data-root", data_root, "--seed", 0, *extra,
    )


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_cli_fits_every_model_on_real_mnist30(tmp_path, data_root, model):
    result = _quick(tmp_path, data_root, model, "run")
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train"] == 30 and metrics["n_test"] == 200 and metrics["epochs"] == 2
    assert set(metrics["test"]) == {"accuracy", "nll", "ece", "brier"}
    assert sum(metrics["reliability"]["count"]) == 200
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == model and config["train"]["batch_size"] == 8
    assert (run / "checkpoint.pt").is_file() and (run / "reliability.png").stat().st_size > 1000
    has_theta = model != "cnn"
    assert (run / "posterior.nc").exists() == has_theta
    assert (run / "augmentations.png").exists() == has_theta
    assert ("theta_posterior_std" in metrics) == has_theta  # how far the posterior spreads θ
    assert ("test_at_mean" in metrics) == (model in ("pstn", "gamma_pstn"))  # a posterior location μ(x)
    if model in ("pstn", "gamma_pstn"):
        assert metrics["theta_posterior_std"] > 0
        assert set(metrics["test_at_mean"]) == set(metrics["test"])
    if model == "stn":
        assert metrics["theta_posterior_std"] == 0  # θ = f(x): a point mass


def test_posterior_file_opens_in_arviz(tmp_path, data_root):
    from inference.posterior import load_inference_data

    assert _quick(tmp_path, data_root, "gamma_pstn", "g").exit_code == 0
    idata = load_inference_data(tmp_path / "g" / "posterior.nc")
    assert dict(idata.posterior["theta"].sizes) == {"chain": 1, "draw": 200, "image": 16, "theta_dim": 4}
    assert list(idata.posterior["theta_dim"].values) == ["angle", "scale", "tx", "ty"]
    assert "lambda" in idata.posterior and idata.constant_data["images"].shape == (16, 1, 28, 28)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet"], "'resnet' is not one of 'cnn', 'stn', 'da', 'pstn', 'gamma_pstn'"),
        (["--data", "mnist31"], "unknown data set 'mnist31'; valid names: mnist, fashion_mnist, mnist10"),
        (["--fold", "7"], "7 is not in the range 0<=x<=4"),
        (["--layout", "shear"], "'rotation', 'translation'"),
        (["--layout", "cpab1d"], "the cpab1d family warps 1-D inputs, but the data are images"),
        (["--annealing", "sigmoid"], "'constant', 'linear', 'cyclic'"),
        (["--epochs", "0"], "0 is not in the range x>=1"),
        (["--device", "tpu"], "unknown device 'tpu'; valid: cpu, cuda, cuda:N"),
        (["--device", "mps"], "unknown device 'mps'; valid: cpu, cuda, cuda:N"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(tmp_path, data_root, args, message):
    result = _invoke("--out-dir", tmp_path / "runs", "--data-root", data_root, "--epochs", 1, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "runs").exists()


def test_missing_data_root_exits_2_with_directions(tmp_path):
    result = _invoke("--out-dir", tmp_path / "runs", "--data-root", tmp_path / "nowhere", "--epochs", 1)
    assert result.exit_code == 2
    assert "does not exist" in result.output and "PYRO_PSTN_DATA" in result.output
    assert not (tmp_path / "runs").exists()


def test_cuda_request_without_a_gpu_is_a_clear_error(tmp_path, data_root):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = _invoke("--out-dir", tmp_path / "runs", "--data-root", data_root, "--device", "cuda", "--epochs", 1)
    assert result.exit_code == 2 and "no CUDA GPU" in result.output
    assert not (tmp_path / "runs").exists()


def test_resume_and_existing_run_dirs(tmp_path, data_root):
    (tmp_path / "empty").mkdir()
    result = _invoke("--resume", tmp_path / "empty")
    assert result.exit_code == 2 and "no config.json" in result.output
    assert _quick(tmp_path, data_root, "cnn", "once").exit_code == 0
    again = _quick(tmp_path, data_root, "cnn", "once")
    assert again.exit_code == 2 and "already exists" in again.output


def test_resume_of_a_damaged_run_names_the_file_and_what_to_do(tmp_path, data_root):
    assert _quick(tmp_path, data_root, "cnn", "run").exit_code == 0
    checkpoint, config = tmp_path / "run" / "checkpoint.pt", tmp_path / "run" / "config.json"
    intact = checkpoint.read_bytes()
    for damage in (intact[: len(intact) // 2], b"not a zip file"):
        checkpoint.write_bytes(damage)
        result = _invoke("--resume", tmp_path / "run")
        assert result.exit_code == 2, result.output
        assert f"{checkpoint} cannot be read as a checkpoint" in result.output and "fit again" in result.output
    checkpoint.write_bytes(intact)
    config.write_text(config.read_text()[:40])  # truncated JSON
    result = _invoke("--resume", tmp_path / "run")
    assert result.exit_code == 2 and f"{config} cannot be read as a FitConfig" in result.output
    assert "delete the run directory and fit again" in result.output


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.fit", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "--kl-weight" in out.stdout and "--resume" in out.stdout


def test_evaluate_on_validation_leaves_the_test_set_alone(tmp_path, data_root):
    result = _quick(tmp_path, data_root, "pstn", "v", "--evaluate-on", "val")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "val" and "test" not in metrics and metrics["n_val"] == 100
    assert "val accuracy" in result.output


def test_folds_and_seeds_fit_as_one_stack_and_the_stack_resumes(tmp_path, data_root):
    result = _quick(tmp_path, data_root, "gamma_pstn", "many", "--folds", "0,1", "--seeds", "3,4")
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert len(runs) == 5 and runs[-1].startswith("many-stack-") and runs[0].startswith("gamma_pstn-mnist30-fold0-seed3-")
    fold1 = json.loads((tmp_path / runs[2] / "config.json").read_text())
    assert fold1["fold"] == 1 and fold1["train"]["seed"] == 3
    assert result.output.count("test accuracy") == 4
    again = _invoke("--resume", tmp_path / runs[-1])
    assert again.exit_code == 0 and again.output.count("test accuracy") == 4
    member = _invoke("--resume", tmp_path / runs[0])
    assert member.exit_code == 2 and "resume the stack's directory" in member.output
    bad = _invoke("--folds", "0,9", "--out-dir", tmp_path / "x")
    assert bad.exit_code == 2 and "'9' is not one of 0, 1, 2, 3, 4" in bad.output and not (tmp_path / "x").exists()
