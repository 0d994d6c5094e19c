"""Bad input to every command exits with status 2, says what is valid, and writes nothing (issue 11).

``experiments.fit`` has its own cases in test_cli.py; these cover ``experiments.reproduce``,
``experiments.pose_vae`` and ``experiments.flow``, each subcommand that takes the option.
"""
import pytest
from click.testing import CliRunner

from experiments import flow, pose_vae, reproduce

REPRODUCE = [
    (["mnist_subsets", "--sizes", "31"], "'31' is not one of 10, 30, 100, 1000, 3000, 10000"),
    (["mnist_subsets", "--folds", "0,5"], "'5' is not one of 0, 1, 2, 3, 4"),
    (["mnist_subsets", "--folds", "zero"], "'zero' is not an integer"),
    (["mnist_subsets", "--models", "cnn,resnet"], "'resnet' is not one of cnn, stn, da, pstn, gamma_pstn"),
    (["mnist_subsets", "--device", "tpu"], "unknown device 'tpu'; valid: cpu, cuda, cuda:N"),
    (["mnist_subsets", "--workers", "0"], "0 is not in the range x>=1"),
    (["grid", "--param", "lr"], "'lr' is not one of 'kl_weight', 'prior_scale'"),
    (["grid", "--size", "31"], "'31' is not one of '10', '30', '100'"),
    (["grid", "--values", "1e-3,abc"], "'abc' is not a number"),
    (["grid", "--values", "-1e-3"], "'-1e-3' must be ≥ 0"),
    (["grid", "--param", "prior_scale", "--values", "0,0.1"], "σ_p values must be positive"),
    (["grid", "--folds", "7"], "'7' is not one of 0, 1, 2, 3, 4"),
    (["grid", "--device", "gpu"], "unknown device 'gpu'"),
    (["calibration", "--prior-scales", "0.1,-0.2"], "'-0.2' must be > 0"),
    (["calibration", "--size", "7"], "'7' is not one of '10', '30'"),
    (["calibration", "--device", "mps"], "unknown device 'mps'"),
]
POSE_VAE = [
    (["fit", "--model", "gan"], "'gan' is not one of 'vae', 'tvae', 'dtvae', 'cat_vae'"),
    (["fit", "--z-dim", "0"], "0 is not in the range x>=1"),
    (["fit", "--transform", "spline"], "valid layouts: rotation"),
    (["fit", "--data", "cifar10"], "'cifar10' is not one of 'mnist', 'fashion_mnist'"),
    (["fit", "--lr", "-1"], "-1.0 is not in the range x>0"),
    (["fit", "--kl-weight", "-0.5"], "-0.5 is not in the range x>=0"),
    (["fit", "--device", "tpu"], "unknown device 'tpu'"),
    (["study002", "--only", "everything"], "'everything' is not one of 'all', 'sizes', 'priors'"),
    (["study002", "--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["study003", "--epochs", "0"], "0 is not in the range x>=1"),
]
FLOW = [
    (["fit", "--data", "mario"], "'mario' is not one of 'mario_iggy45', 'mario_iggy90'"),
    (["fit", "--base", "laplace"], "'laplace' is not one of 'gaussian', 'mixture'"),
    (["fit", "--lr", "0"], "0.0 is not in the range x>0"),
    (["fit", "--device", "tpu"], "unknown device 'tpu'"),
    (["invariance", "--alpha", "-0.1"], "-0.1 is not in the range x>=0"),
    (["invariance", "--epochs", "0"], "0 is not in the range x>=1"),
    (["discover", "--device", "tpu"], "unknown device 'tpu'"),
    (["modes", "--train-size", "0"], "0 is not in the range x>=1"),
    (["pid", "--classifier-width", "0"], "0 is not in the range x>=1"),
    (["align", "--step", "0"], "0.0 is not in the range x>0"),
    (["align", "--alpha", "0.9"], "alpha_min ≤ alpha ≤ alpha_max"),
]


@pytest.mark.parametrize("command, args, message", [
    *[(reproduce.main, a, m) for a, m in REPRODUCE],
    *[(pose_vae.main, a, m) for a, m in POSE_VAE],
    *[(flow.main, a, m) for a, m in FLOW],
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_exits_2_lists_the_valid_values_and_writes_nothing(command, args, message, tmp_path):
    result = CliRunner().invoke(command, [*args, "--results-dir", str(tmp_path / "results"),
                                          "--run-root", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not any(tmp_path.iterdir())


LOCALIZE = [
    (["pretrain", "--data", "cifar"], "'cifar' is not one of 'mnist', 'fashion_mnist'"),
    (["fit", "--model", "cnn"], "'cnn' is not one of 'stn', 'pstn', 'gamma_pstn'"),
    (["rotated", "--models", "cnn"], "'cnn' is not one of stn, pstn, gamma_pstn"),
    (["placement", "--seeds", "x"], "'x' is not an integer"),
    (["failure_mode", "--depths", "11"], "'11' is not one of 1, 2, 3"),
    (["failure_mode", "--device", "tpu"], "unknown device 'tpu'"),
    (["failure_mode", "--stack", "0"], "0 is not in the range x>=1"),
]


@pytest.mark.parametrize("args, message", LOCALIZE, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_localize_bad_input_exits_2(args, message, tmp_path):
    from experiments import localize

    result = CliRunner().invoke(localize.main, [*args, "--results-dir", str(tmp_path / "results"),
                                                "--run-root", str(tmp_path / "runs")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not any(tmp_path.iterdir())


def _other_commands():
    from experiments import confidence, fit_mnist30, notebooks, robustness, slurm

    return [
        (confidence.main, ["--samples", "0"], "every S must be at least 1"),
        (confidence.main, ["--sizes", "7"], "'7' is not one of 10, 30"),
        (fit_mnist30.main, ["--seeds", "abc"], "'abc' is not an integer"),
        (fit_mnist30.main, ["--models", "resnet"], "'resnet' is not one of cnn, stn"),
        (notebooks.main, ["--only", "05"], "'05' is not one of '01_inspect_posteriors'"),
        (slurm.main, ["--shards", "2", "--", "reproduce", "nothing"], "after -- give a sweep command"),
        (slurm.main, ["--shards", "0", "--", "reproduce", "grid"], "0 is not in the range x>=1"),
        (reproduce.main, ["paired", "--datasets", "Nope"], "no repetitions of 'Nope'"),
        (reproduce.main, ["ablation", "--factors", "nope"], "'nope' is not one of ours"),
        (reproduce.main, ["stacked_vs_single", "--sizes", "7"], "'7' is not one of 10, 30"),
        (robustness.main, [], "Missing argument 'RUN_DIRS...'"),
        (robustness.main, ["somewhere", "--scales", "0"], "'0' must be > 0"),
        (robustness.main, ["somewhere", "--rotations", "nan"], "'nan' is not a finite number"),
        (robustness.main, ["somewhere", "--name", "../x"], "'../x' is not a file name"),
        (robustness.main, ["somewhere", "--results-dir", "results"], "somewhere holds no config.json"),
    ]


def test_every_other_command_refuses_bad_input_with_status_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command, args, message in _other_commands():
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir())
