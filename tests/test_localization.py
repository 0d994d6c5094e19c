"""Localization with frozen classifiers (issue 14, paper 001 §5.1): ground-truth data, ε, the
spread split, the authors' localizers, frozen classifiers, and the command on real MNIST."""
import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from inference.localization import spread_by_error, transformation_errors, wrap_angle
from inference.stacked import stack_dir_name
from pyro_pstn.data.localization import place, rotate
from pyro_pstn.nets import Frozen, count_parameters, large_localizer, mnist_cnn_classifier
from pyro_pstn.transforms import warp


def _blobs(n=6, size=28):
    """Smooth images that fit inside the central disk (a rotation keeps all of them)."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centres = (torch.rand(n, 2) - 0.5) * 0.6
    width = 0.25 + 0.1 * torch.rand(n, 1, 1)
    d2 = (xx - centres[:, 0, None, None]) ** 2 + (yy - 0.5 * centres[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * width**2)).unsqueeze(1).double()


def test_rotated_images_are_undone_by_their_theta_true_and_fixed_by_the_seed():
    x = _blobs()
    rotated, theta = rotate(x, seed=5)
    assert theta.shape == (6, 1) and theta.abs().max() <= math.pi
    assert not torch.allclose(rotated, x, atol=0.05)
    torch.testing.assert_close(warp(rotated, theta, "rotation"), x, atol=0.04, rtol=0)  # interpolation twice
    assert (warp(rotated, -theta, "rotation") - x).abs().max() > 0.2  # the sign convention matters
    again, theta_again = rotate(x, seed=5)
    assert torch.equal(again, rotated) and torch.equal(theta_again, theta)
    assert not torch.equal(rotate(x, seed=6)[1], theta)


def test_placed_items_sit_on_a_black_canvas_and_their_theta_true_crops_them_back():
    x = _blobs()
    canvas, theta = place(x, seed=1)
    assert canvas.shape == (6, 1, 96, 96)
    assert torch.equal(theta[:, :2], torch.tensor([0.0, 0.5], dtype=theta.dtype).expand(6, 2))
    assert theta[:, 2:].abs().max() <= 0.5
    crop = warp(canvas, theta.double(), "similarity", size=(28, 28))
    torch.testing.assert_close(crop, x, atol=0.06, rtol=0)
    # outside the item's square (half the canvas side) the canvas is black
    ys = torch.linspace(-1, 1, 96 * 2 + 1)[1::2]
    outside = ((ys[None, None, :] - theta[:, 2, None, None]).abs() > 0.52) | \
              ((ys[None, :, None] - theta[:, 3, None, None]).abs() > 0.52)
    assert canvas[:, 0][outside].abs().max() == 0


def test_transformation_error_compares_angles_on_the_circle():
    assert float(wrap_angle(torch.tensor(2 * math.pi - 0.1))) == pytest.approx(-0.1, abs=1e-6)
    true, mu = torch.tensor([[3.1], [0.5]], dtype=torch.float64), torch.tensor([[-3.1], [0.2]], dtype=torch.float64)
    torch.testing.assert_close(transformation_errors(true, mu, "rotation"),
                               torch.tensor([2 * math.pi - 6.2, 0.3], dtype=torch.float64))
    sim_true = torch.tensor([[3.0, 0.5, 0.1, 0.0]], dtype=torch.float64)
    sim_mu = torch.tensor([[-3.0, 0.8, 0.1, 0.4]], dtype=torch.float64)  # scale and ty differ; the angle by 2π − 6
    expected = math.sqrt((2 * math.pi - 6.0) ** 2 + 0.3**2 + 0.4**2)
    assert float(transformation_errors(sim_true, sim_mu, "similarity")) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"\[N, 1\]"):
        transformation_errors(sim_true, sim_mu, "rotation")


def test_spread_above_and_below_the_median_error():
    errors = torch.tensor([0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
    spread = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [2.0, 1.0], [1.5, 1.5], [1.5, 1.5]])
    split = spread_by_error(errors, spread)
    assert split.spread_below == pytest.approx(1.0) and split.spread_above == pytest.approx(1.5)
    assert split.ratio == pytest.approx(1.5) and split.to_dict()["median_error"] == pytest.approx(0.3)


def test_the_authors_large_localizers_have_their_parameter_counts():
    # anchors.md §1.3: large_loc (rotated MNIST) and the 96 × 96 placement localizer
    assert count_parameters(large_localizer("rotation")) == 71_883
    assert count_parameters(large_localizer("rotation", probabilistic=False)) == 72_617
    assert count_parameters(large_localizer("similarity", canvas=96)) == 193_962
    assert count_parameters(large_localizer("similarity", probabilistic=False, canvas=96)) == 193_079
    loc, spread = large_localizer("similarity", canvas=96, spread_init=-3.0)(torch.randn(2, 1, 96, 96))
    torch.testing.assert_close(loc, torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 2))  # identity at the start
    torch.testing.assert_close(spread, torch.full((2, 4), math.log1p(math.exp(-3.0))))


def test_a_frozen_classifier_keeps_its_weights_and_passes_gradients_through():
    from inference.engine import TrainConfig, Trainer
    from pyro_pstn.models import STN

    torch.manual_seed(0)
    classifier = mnist_cnn_classifier()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    model = STN(Frozen(classifier), layout="rotation", localizer=large_localizer("rotation", probabilistic=False))
    loc_before = [p.clone() for p in model.localizer.parameters()]
    trainer = Trainer(model, TrainConfig(lr=1e-2, weight_decay=0.01))
    model.train()
    assert not classifier.training  # dropout stays off
    x, y = torch.randn(8, 1, 28, 28), torch.randint(10, (8,))
    for _ in range(2):
        trainer.train_step(x, y)
    for k, v in classifier.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(model.localizer.parameters(), loc_before))


def test_warps_can_sample_an_output_of_another_size():
    x = torch.rand(2, 1, 96, 96)
    theta = torch.tensor([[0.0, 0.5, 0.2, -0.1]]).expand(2, 4)
    assert warp(x, theta, "similarity", size=(28, 28)).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="2-D families"):
        warp(torch.rand(2, 1, 50), torch.zeros(2, 9), "cpab1d", size=(28, 28))


def test_pretrain_then_fit_a_localizer_on_rotated_mnist(tmp_path, data_root, pretrained_mnist, monkeypatch):
    import shutil

    from experiments.localize import main

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    common = ["--results-dir", str(tmp_path), "--run-root", str(tmp_path / "runs")]
    missing = CliRunner().invoke(main, ["fit", "--epochs", "1", "--train-size", "64", *common])
    assert missing.exit_code == 2 and "localize pretrain --data mnist" in missing.output
    run_root, classifier = pretrained_mnist
    shutil.copytree(run_root / classifier, tmp_path / "runs" / classifier)
    fit = CliRunner().invoke(main, ["fit", "--model", "gamma_pstn", "--epochs", "1", "--train-size", "128",
                                    "--test-size", "200", "--val-size", "64", "--classifier", classifier, *common],
                             catch_exceptions=False)
    assert fit.exit_code == 0, fit.output
    record = json.loads((tmp_path / "localization" / "runs" /
                         "rotated_mnist-gamma_pstn-e1-seed0-smoke128x200.json").read_text())
    test = record["test"]
    assert 0 <= test["epsilon"] <= math.pi and 0 <= test["accuracy"] <= 1
    assert set(test["spread_by_error"]) == {"median_error", "spread_above", "spread_below", "ratio"}
    arrays = torch.load(tmp_path / "runs" / record["name"] / "localization.pt")
    assert arrays["theta_true"].shape == arrays["mu"].shape == (200, 1)
    from experiments.localize import write_study
    from inference.localizer_runs import LocalizeConfig

    config = LocalizeConfig(train_size=128, test_size=200, val_size=64, classifier="classifier-mnist-e1-smoke1000",
                            train=dict(epochs=1))
    baseline = {"accuracy": 0.4, "nll": 2.0}
    text = write_study("rotated_mnist", tmp_path, tmp_path / "runs", baseline, tmp_path / "missing.json", [config],
                       [record])
    assert "| gamma_pstn | 1 |" in text and "Reduced budget" in text and "0.8298" in text
    assert (tmp_path / "localization" / "rotated_mnist_theta.png").stat().st_size > 0
    assert (tmp_path / "localization" / "rotated_mnist_spread.png").stat().st_size > 0


def test_placement_crops_96_by_96_canvases_for_the_28_by_28_classifier(tmp_path, data_root, monkeypatch):
    from experiments.localize import main, write_study
    from inference.localizer_runs import LocalizeConfig

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    common = ["--results-dir", str(tmp_path), "--run-root", str(tmp_path / "runs")]
    pre = CliRunner().invoke(main, ["pretrain", "--data", "fashion_mnist", "--epochs", "1", "--train-size", "500",
                                    *common], catch_exceptions=False)
    assert pre.exit_code == 0, pre.output
    classifier = "classifier-fashion_mnist-e1-smoke500"
    records, configs = [], []
    for model in ("stn", "gamma_pstn"):
        fit = CliRunner().invoke(main, ["fit", "--model", model, "--data", "placed_fashion_mnist", "--epochs", "1",
                                        "--train-size", "64", "--test-size", "40", "--val-size", "16", "--classifier", classifier,
                                        *common],
                                 catch_exceptions=False)
        assert fit.exit_code == 0, fit.output
        configs.append(LocalizeConfig(model=model, data="placed_fashion_mnist", train_size=64, test_size=40,
                                      val_size=16, classifier=classifier, train=dict(epochs=1)))
        records.append(json.loads((tmp_path / "localization" / "runs" / f"{configs[-1].name}.json").read_text()))
        assert records[-1]["config"]["train"]["localizer_lr_mult"] == 0.1  # the authors' placement script; rotated: 1
    arrays = torch.load(tmp_path / "runs" / configs[1].name / "localization.pt")
    assert arrays["inputs"].shape == (8, 1, 96, 96) and arrays["crops"].shape == (8, 1, 28, 28)
    assert arrays["mu"].shape == (40, 4)
    text = write_study("placed_fashion_mnist", tmp_path, tmp_path / "runs", {"accuracy": 0.9, "nll": 0.3},
                       tmp_path / "localization" / "runs" / f"{classifier}.json", configs, records)
    assert "0.8499" in text and "upright, unplaced" in text
    assert (tmp_path / "localization" / "placed_fashion_mnist_crops.png").stat().st_size > 0


def test_failure_mode_reports_accuracy_and_the_variance_of_the_mean_rotation(tmp_path, data_root, monkeypatch):
    from experiments.localize import main

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    result = CliRunner().invoke(main, ["failure_mode", "--depths", "2", "--seeds", "0", "--epochs", "1",
                                       "--train-size", "128", "--test-size", "100", "--results-dir", str(tmp_path),
                                       "--run-root", str(tmp_path / "runs")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = tmp_path / "localization" / "runs"
    stn = json.loads((runs / "failure-stn-depth2-e1-seed0-smoke128x100.json").read_text())
    nn = json.loads((runs / "failure-nn_upright-depth2-e1-seed0-smoke128x100.json").read_text())
    assert stn["test"]["mean_transformation_variance"] >= 0 and "mean_transformation_variance" not in nn["test"]
    assert "- stn, depths 2: median accuracy above the classifier alone" in result.output
    assert (tmp_path / "localization" / "failure_mode_variance.png").stat().st_size > 0
    text = (tmp_path / "localization_failure_mode.md").read_text()
    assert "| gamma_pstn | 2 | 1 |" in text and "Reduced budget" in text


def test_failure_mode_stacks_seeds_and_an_interrupted_stack_resumes(tmp_path, data_root, monkeypatch):
    """Issue 34: --stack fits the seeds of a (model, depth) as one stack; every run still leaves its
    record (marked ``stacked``) and its single run's directory, an odd one out is fitted alone, and a
    stack whose directory an interrupted call left behind continues instead of being refused."""
    from experiments.localize import main

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    args = ["failure_mode", "--depths", "1", "--models", "stn,gamma_pstn", "--epochs", "1", "--train-size", "128",
            "--test-size", "60", "--stack", "2", "--results-dir", str(tmp_path), "--run-root", str(tmp_path / "runs")]
    stack_dir = tmp_path / "runs" / stack_dir_name([f"failure-stn-depth1-e1-seed{s}-smoke128x60" for s in (0, 1)])
    stack_dir.mkdir(parents=True)  # as a call killed right after starting this stack leaves it
    (stack_dir / "stack.json").write_text(json.dumps({"configs": [], "run_dirs": []}))
    refused = CliRunner().invoke(main, [*args, "--seeds", "0,1"])
    assert refused.exit_code == 2 and "holds a run of another config" in refused.output
    shutil.rmtree(stack_dir)
    result = CliRunner().invoke(main, [*args, "--seeds", "0,1,2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = tmp_path / "localization" / "runs"
    records = {p.stem: json.loads(p.read_text()) for p in runs.glob("failure-*.json")}
    assert len(records) == 6 and [r.get("stacked") for r in records.values()].count(2) == 4
    single = records["failure-stn-depth1-e1-seed2-smoke128x60"]
    stacked = records["failure-stn-depth1-e1-seed0-smoke128x60"]
    assert set(stacked) == set(single) | {"stacked"} and stacked["config"] == {**single["config"], "train": {
        **single["config"]["train"], "seed": 0}}
    assert all((tmp_path / "runs" / name / "checkpoint.pt").is_file() for name in records)
    for seed in (0, 1):  # a call killed after the stack's last checkpoint, before its records
        (runs / f"failure-stn-depth1-e1-seed{seed}-smoke128x60.json").unlink()
    again = CliRunner().invoke(main, [*args, "--seeds", "0,1,2"], catch_exceptions=False)
    assert again.exit_code == 0 and "fitting 2 runs as one stack" in again.output
    assert (runs / "failure-stn-depth1-e1-seed0-smoke128x60.json").is_file()


def test_posterior_variance_is_sigma_squared_or_the_student_t_squared_scale():
    from inference.localization import posterior_variance
    from pyro_pstn.models import build_model

    spread = torch.tensor([[0.5, 2.0, 1.0, 3.0]], dtype=torch.float64)  # the similarity layout: 4 dims
    torch.testing.assert_close(posterior_variance(build_model("pstn"), spread), spread**2)
    torch.testing.assert_close(posterior_variance(build_model("gamma_pstn", gamma_concentration=2.0), spread), spread / 2)
