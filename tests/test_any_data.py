"""Any data, any network (issue 32): data specs, files of one's own, models sized from the spec,
the engine over torch Datasets, transform families of one's own, and clear errors on bad input."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner
from torch.utils.data import Dataset, TensorDataset

from inference.engine import TrainConfig, Trainer
from inference.latents import encode
from inference.plots import augmentation_grid
from inference.predictive import posterior_draws, predict
from pyro_pstn.data import DataError, DataSpec, dataset_names, load_dataset, register_dataset, splits_from_arrays
from pyro_pstn.models import build_model, build_pose_vae
from pyro_pstn.nets import count_parameters
from pyro_pstn.transforms import CPAB_FAMILIES, LAYOUTS, get_layout, register_family, warp
from pyro_pstn.transforms.registry import USER_FAMILIES

FIVE = ("cnn", "stn", "pstn", "gamma_pstn", "flow_pstn")


def _images(n_per_class: int, classes: int, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose class is the position of a bright square (so a classifier can learn it)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.integers(0, 40, size=(len(y), *shape), dtype=np.uint8)
    side = shape[-1]
    for i, c in enumerate(y):
        col = (c * side) // classes
        x[i, ..., side // 4 : side // 4 + 4, col : col + 3] = 255
    return x, y


def _npz(tmp_path, shape=(3, 32, 32), classes=7, n=6, name="data.npz", **extra):
    x, y = _images(n, classes, shape)
    path = tmp_path / name
    np.savez(path, images=x, labels=y, **extra)
    return path


class Shear:
    """A transform family defined here: a horizontal shear x' = x + s·y (θ = s, identity 0)."""

    name, dim = "test_shear", 1

    def identity_theta(self, dtype=torch.float32, device=None):
        return torch.zeros(1, dtype=dtype, device=device)

    def grid(self, theta, size, align_corners=False):
        A = torch.zeros(len(theta), 2, 3, dtype=theta.dtype, device=theta.device)
        A[:, 0, 0] = A[:, 1, 1] = 1
        A[:, 0, 1] = theta[:, 0].clamp(-10, 10)  # finite for every finite θ
        return F.affine_grid(A, size, align_corners=align_corners)


class TinyNet(nn.Module):
    """A classifier of the user's: any module from [B, C, H, W] to logits [B, K]."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(16, classes))

    def forward(self, x):
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(*x.shape[:-3], -1)


# ---- data specs and files ------------------------------------------------------------------------


def test_an_npz_of_colour_images_knows_its_spec_and_is_split_stratified(tmp_path):
    data = load_dataset(str(_npz(tmp_path)), fold=3)
    assert data.spec.shape == (3, 32, 32) and data.spec.num_classes == 7 and len(data.spec.mean) == 3
    # per-channel normalisation by the training split's statistics; the background is where 0 lands
    assert torch.allclose(data.train.images.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert data.spec.background == pytest.approx([-m / s for m, s in zip(data.spec.mean, data.spec.std)])
    assert sorted(torch.cat([data.train.labels, data.val.labels, data.test.labels]).tolist()) == sorted(
        np.repeat(np.arange(7), 6).tolist())
    assert set(data.test.labels.tolist()) == set(range(7))  # stratified: every class in test
    assert "seed 3" in data.source and "held out as test" in data.source
    again = load_dataset(str(_npz(tmp_path)), fold=3)
    assert torch.equal(again.test.images, data.test.images)  # seeded


def test_npz_with_its_own_test_set_series_and_grey_images(tmp_path):
    x, y = _images(5, 3, (20, 20))
    path = tmp_path / "grey.npz"
    np.savez(path, images=x, labels=y, test_images=x[:4], test_labels=y[:4])
    data = load_dataset(str(path))
    assert data.spec.shape == (1, 20, 20) and len(data.test) == 4 and "its own test set" in data.source
    series = tmp_path / "series.npz"
    np.savez(series, images=np.random.default_rng(0).normal(size=(30, 2, 50)).astype(np.float32),
             labels=np.arange(30) % 3)
    assert load_dataset(str(series)).spec.shape == (2, 50)


@pytest.mark.parametrize("arrays, message", [
    ({"pictures": np.zeros((4, 20, 20))}, "has no array 'images' or 'labels'"),
    ({"images": np.zeros((12, 20, 20)), "labels": np.arange(12.0) % 2}, r"labels are float64; store them as integers"),
    ({"images": np.zeros((12, 20, 20)), "labels": np.zeros(11, dtype=int)}, r"labels of shape \(11,\) for 12"),
    ({"images": np.full((12, 20, 20), np.nan), "labels": np.arange(12) % 2}, "NaN or infinite"),
    ({"images": np.zeros((12, 20, 20)), "labels": np.zeros(12, dtype=int)}, "at least two classes|at least 3"),
    ({"images": np.zeros((0, 20, 20)), "labels": np.zeros(0, dtype=int)}, "no examples"),
])
def test_bad_npz_files_say_what_the_file_must_hold(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot be read as an .npz"):
        load_dataset(str(tmp_path / "corrupt.npz"))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))


def test_a_folder_of_class_folders_is_read_with_pillow_in_colour(tmp_path):
    from PIL import Image

    x, y = _images(4, 3, (3, 24, 24))
    for i, (image, label) in enumerate(zip(x, y)):
        folder = tmp_path / "pics" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i}.png")
    data = load_dataset(str(tmp_path / "pics"))
    assert data.spec.shape == (3, 24, 24) and data.spec.num_classes == 3
    (tmp_path / "pics" / "class_0" / "broken.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="broken.png cannot be read as an image"):
        load_dataset(str(tmp_path / "pics"))


def test_a_ucr_file_at_any_path_and_a_registered_name(tmp_path):
    rows = [f"{i % 2}\t" + "\t".join(str(np.sin(t * (1 + i % 2))) for t in range(12)) for i in range(16)]
    (tmp_path / "Mine_TRAIN.tsv").write_text("\n".join(rows) + "\n")
    alone = load_dataset(str(tmp_path / "Mine_TRAIN.tsv"))
    assert alone.spec.shape == (1, 12) and "held out as test" in alone.source
    (tmp_path / "Mine_TEST.tsv").write_text("\n".join(rows[:6]) + "\n")
    assert len(load_dataset(str(tmp_path / "Mine_TRAIN.tsv")).test) == 6
    register_dataset("test_mine", tmp_path / "Mine_TRAIN.tsv", overwrite=True)
    assert "test_mine" in dataset_names() and load_dataset("test_mine").spec.shape == (1, 12)
    with pytest.raises(ValueError, match="registered already"):
        register_dataset("test_mine", tmp_path / "Mine_TRAIN.tsv")


# ---- models from the spec ------------------------------------------------------------------------


def test_the_papers_networks_keep_their_counts_and_other_specs_get_sized_networks():
    counts = {m: count_parameters(build_model(m)) for m in ("cnn", "stn", "pstn")}
    assert counts == {"cnn": 28_086, "stn": 28_726, "pstn": 26_662}  # anchors.md §1.3
    for spec in (DataSpec((3, 32, 32), 7), DataSpec((1, 64, 64), 10), DataSpec((2, 16, 40), 3)):
        for name in FIVE:
            model = build_model(name, spec).eval()
            x = torch.randn(2, *spec.shape)
            assert predict(model, x, num_samples=2).shape == (2, spec.num_classes)
    with pytest.raises(ValueError, match="too small for the built-in networks"):
        build_model("pstn", DataSpec((1, 12, 12), 3))


# ---- fits through the command line and the Python API --------------------------------------------


@pytest.mark.parametrize("model", FIVE)
def test_fit_command_on_an_npz_of_colour_images_with_7_classes(tmp_path, model):
    from experiments.fit import main
    from inference.kinds import load_run

    path = _npz(tmp_path)
    result = CliRunner().invoke(main, ["--model", model, "--data", str(path), "--epochs", "2", "--test-samples", "2",
                                       "--out-dir", str(tmp_path / "runs"), "--run-name", "r", "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "r"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] == 7 and 0 <= metrics["test"]["accuracy"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert config["spec"]["shape"] == [3, 32, 32] and "held out as test" in config["data_source"]
    assert config["train"]["threads"] is None and "1 torch threads" in metrics["machine"]
    assert (run / "reliability.png").is_file()
    assert (run / "posterior.nc").is_file() == (model != "cnn")
    loaded = load_run(run).model
    assert loaded.spec == load_dataset(str(path)).spec


@pytest.mark.parametrize("model", FIVE)
def test_python_api_fits_1x64x64_images(tmp_path, model):
    from experiments.config import authors_config
    from inference.fitting import run_fit

    path = _npz(tmp_path, shape=(64, 64), classes=4, n=5)
    config = authors_config(model, str(path), train={"epochs": 1}, test_samples=2, posterior_draws=10)
    metrics = run_fit(config, tmp_path / "run", progress=False)
    assert metrics["n_test"] == 4 and metrics["parameters"] > 0


@pytest.mark.parametrize("model", FIVE)
def test_a_users_classifier_module_works_everywhere(model):
    x, y = _images(4, 3, (3, 20, 20))
    data = splits_from_arrays(x, y)
    net = TinyNet(3, 3)
    built = build_model(model, data.spec, classifier=net)
    assert built.classifier is net
    trainer = Trainer(built, TrainConfig(epochs=2, batch_size=4))
    trainer.fit(TensorDataset(data.train.images, data.train.labels), data.val, progress=False)
    assert predict(built, data.test.images, num_samples=2).shape == (len(data.test), 3)
    if built.latent_sites:
        assert posterior_draws(built, data.test.images[:2], 3)["theta"].shape[:2] == (3, 2)


@pytest.mark.parametrize("model", ("stn", "da", "pstn", "gamma_pstn", "flow_pstn"))
def test_a_transform_family_defined_here_goes_everywhere(tmp_path, model):
    family = register_family("test_shear", Shear(), overwrite=True)
    assert get_layout("test_shear") is family
    x, y = _images(4, 3, (1, 20, 20))
    data = splits_from_arrays(x, y)
    built = build_model(model, data.spec, layout="test_shear")
    assert built.layout is family
    Trainer(built, TrainConfig(epochs=1, batch_size=4)).fit(data.train, data.val, progress=False)
    draws = posterior_draws(built, data.test.images[:3], 4) if built.latent_sites else None
    if draws is not None:
        warped = built.transform(data.test.images[:3], draws["theta"])
        assert warped.shape == (4, 3, 1, 20, 20) and torch.isfinite(warped).all()
        augmentation_grid(data.test.images[:3], warped, tmp_path / "grid.png")
        from inference.posterior import to_inference_data

        idata = to_inference_data(draws, family, data.test.images[:3], data.test.labels[:3], range(3))
        assert list(idata.posterior["theta"].coords["theta_dim"].values) == ["theta0"]


def test_a_family_must_answer_the_contract():
    with pytest.raises(ValueError, match="not a transform family"):
        register_family("test_nothing", object())
    with pytest.raises(ValueError, match="exists already"):
        register_family("similarity", Shear())


def test_mario_iggy_sprites_fit_and_plot_in_colour(tmp_path, data_root):
    from matplotlib.image import imread

    from pyro_pstn.data import mario_iggy

    data = mario_iggy(data_root, train_size=16, val_size=8, test_size=8)
    assert data.spec.shape == (3, 32, 32) and data.spec.num_classes == 4
    model = build_model("pstn", data.spec)
    Trainer(model, TrainConfig(epochs=1, batch_size=8)).fit(data.train, progress=False)
    images = data.test.images[:2]
    theta = posterior_draws(model, images, 3)["theta"]
    augmentation_grid(images, model.transform(images, theta), tmp_path / "grid.png")
    pixels = imread(tmp_path / "grid.png")[..., :3]
    spread = pixels.max(-1) - pixels.min(-1)  # grey pixels have R = G = B
    assert (spread > 0.3).mean() > 0.01  # the sprites' colours are there


# ---- the engine over torch Datasets ---------------------------------------------------------------


class PairList(Dataset):
    """A Dataset of the most general kind: items one at a time, labels as Python ints."""

    def __init__(self, images, labels):
        self.items = list(zip(images, labels.tolist()))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_trainer_fit_takes_a_tensor_dataset_and_any_dataset_with_the_same_result():
    x, y = _images(4, 3, (1, 20, 20))
    data = splits_from_arrays(x, y)
    results = []
    for train in (data.train, TensorDataset(data.train.images, data.train.labels),
                  PairList(data.train.images, data.train.labels)):
        torch.manual_seed(0)
        model = build_model("pstn", data.spec)
        trainer = Trainer(model, TrainConfig(epochs=2, batch_size=3, seed=1))
        history = trainer.fit(train, progress=False)
        results.append((history.records[-1].loss, model.classifier.head[-1].weight.detach().clone()))
    for loss, weight in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6) and torch.allclose(weight, results[0][1])


def test_parameter_groups_come_from_the_model_not_a_localizer_attribute():
    class NoLocalizer(nn.Module):
        classifies, event_dim = True, 1  # what it can do, and its inputs: vectors [B, 4]

        def __init__(self):
            super().__init__()
            self.f = nn.Linear(4, 2)

        def model(self, x, y=None):
            import pyro
            import pyro.distributions as dist

            with pyro.plate("data", x.shape[0]):
                logits = self.f(x)
                pyro.sample("y", dist.Categorical(logits=logits), obs=y)
            return logits

        def guide(self, x, y=None):
            pass

    model = NoLocalizer()
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=4))
    assert len(trainer.optimizer.param_groups) == 1
    trainer.fit(TensorDataset(torch.randn(8, 4), torch.arange(8) % 2), progress=False)


# ---- bad input through the API -------------------------------------------------------------------


def _fit(model, x, y, val=None):
    Trainer(model, TrainConfig(epochs=1, batch_size=4)).fit(TensorDataset(x, y) if x is not None else y, val,
                                                            progress=False)


@pytest.mark.parametrize("case, message", [
    ("float labels", "labels must be integer class indices.*y.long()"),
    ("labels out of range", r"labels must lie in 0..2 \(the model has 3 classes\)"),
    ("empty", "is empty: give at least one example"),
    ("channels", r"do not match the model, built for images 1×20×20"),
    ("size", r"do not match the model, built for images 1×20×20"),
    ("nan images", "NaN or infinite values; clean the data"),
    ("integer images", "images must be floating point"),
])
def test_api_mistakes_raise_value_errors_that_say_what_to_do(case, message):
    spec = DataSpec((1, 20, 20), 3)
    model = build_model("gamma_pstn", spec)
    x, y = torch.randn(8, 1, 20, 20), torch.arange(8) % 3
    inputs = {
        "float labels": (x, y.float()),
        "labels out of range": (x, y + 1),
        "empty": (x[:0], y[:0]),
        "channels": (torch.randn(8, 3, 20, 20), y),
        "size": (torch.randn(8, 1, 24, 20), y),
        "nan images": (x.masked_fill(torch.rand_like(x) < 0.01, float("nan")), y),
        "integer images": ((x * 10).long(), y),
    }[case]
    with pytest.raises(ValueError, match=message):
        _fit(model, *inputs)


def test_mistakes_are_caught_for_models_without_a_spec_and_for_lazy_datasets():
    net = TinyNet(1, 3)
    from pyro_pstn.models import CNN

    model = CNN(net)  # no spec: the engine asks the model with one forward pass
    x, y = torch.randn(8, 1, 20, 20), torch.arange(8) % 3
    with pytest.raises(ValueError, match=r"labels must lie in 0..2"):
        _fit(model, x, y + 1)
    with pytest.raises(ValueError, match=r"inputs of shape \(5, 20, 20\) do not fit the model"):
        _fit(model, torch.randn(8, 5, 20, 20), y)
    bad = x.clone()
    bad[6, 0, 3, 3] = float("nan")  # not in the first items: found when its batch is drawn
    with pytest.raises(ValueError, match="NaN or infinite"):
        _fit(build_model("cnn", DataSpec((1, 20, 20), 3)), None, PairList(bad, y))


def test_nan_images_at_predict_time_and_shape_mismatch_say_so():
    model = build_model("gamma_pstn", DataSpec((1, 20, 20), 3))
    x = torch.randn(4, 1, 20, 20)
    x[1, 0, 0, 0] = float("nan")
    for fn in (lambda m, x: predict(m, x), lambda m, x: posterior_draws(m, x, 2)):
        with pytest.raises(ValueError, match="NaN or infinite values"):
            fn(model, x)
        with pytest.raises(ValueError, match="do not match the model"):
            fn(model, torch.randn(4, 3, 20, 20))


# ---- a NaN θ never gives a silent NaN image ----------------------------------------------------------


def _every_family():
    families = [*LAYOUTS, "tps", *CPAB_FAMILIES, "time_affine"]
    register_family("test_shear", Shear(), overwrite=True)
    return families + ["test_shear"]


@pytest.mark.parametrize("name", _every_family())
def test_a_nan_theta_is_refused_by_every_family(name):
    family = get_layout(name)
    x = torch.randn(2, 1, 16) if getattr(family, "ndim", 2) == 1 else torch.randn(2, 1, 16, 16)
    theta = family.identity_theta().expand(2, family.dim).clone()
    theta[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite entries"):
        warp(x, theta, family)
    theta.requires_grad_(True)
    with pytest.raises(ValueError, match="NaN or infinite entries"):  # in training steps too (θ on the CPU)
        warp(x, theta, family)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_the_engine_stops_a_diverged_fit_with_a_clear_error():
    class NaNLocalizer(nn.Module):
        def forward(self, x):
            loc = torch.full((x.shape[0], 4), float("nan"))
            return loc, torch.ones_like(loc)

    spec = DataSpec((1, 20, 20), 3)
    model = build_model("pstn", spec, localizer=NaNLocalizer())
    with pytest.raises(ValueError, match="NaN or infinite entries"):
        _fit(model, torch.randn(8, 1, 20, 20), torch.arange(8) % 3)
    model = build_model("cnn", spec)
    with torch.no_grad():
        model.classifier.head[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="training diverged in epoch 1"):
        _fit(model, torch.randn(8, 1, 20, 20), torch.arange(8) % 3)


# ---- inference/latents.py keeps the model's mode ---------------------------------------------------


def test_encode_leaves_a_model_in_eval_mode_and_its_batch_norm_statistics_alone():
    model = build_pose_vae("vae", z_dim=4, architecture="conv").eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert before
    encode(model, torch.rand(6, 1, 28, 28))
    assert not model.training
    model.generate(3) if hasattr(model, "generate") else model.decoder(torch.randn(3, 4))
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)


def teardown_module():
    USER_FAMILIES.pop("test_shear", None)


@pytest.mark.parametrize("name, architecture", [("tvae", "dense"), ("dtvae", "dense"), ("vae", "conv")])
def test_pose_vaes_are_sized_from_a_colour_spec(name, architecture):
    spec = DataSpec((3, 32, 32), 4)
    model = build_pose_vae(name, z_dim=4, spec=spec, architecture=architecture)
    x = torch.rand(8, 3, 32, 32)  # pixels in [0, 1] for the Bernoulli likelihood
    Trainer(model, TrainConfig(epochs=1, batch_size=4, kl_weight=1.0)).fit(TensorDataset(x, torch.zeros(8).long()),
                                                                          progress=False)
    assert model.generate(2).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="take square images"):
        build_pose_vae("vae", spec=DataSpec((3, 32, 40), 4), architecture="conv")


def test_schedules_reach_model_and_guide_as_arguments_not_attributes():
    """The KL weight (annealed, then doubled by a hook that sees it) arrives through the loss;
    nothing is written on the model between steps."""
    spec = DataSpec((1, 20, 20), 3)
    model = build_model("pstn", spec)
    seen = []
    guide = model.guide

    def spy(x, y=None, kl_weight=None):
        seen.append(kl_weight)
        return guide(x, y, kl_weight=kl_weight)

    model.guide = spy
    before = model.kl_weight
    trainer = Trainer(model, TrainConfig(epochs=2, batch_size=4, kl_weight=0.4, annealing="linear", warmup_epochs=2),
                      step_hooks=(lambda t: {"kl_weight": 2 * t.loss_args["kl_weight"]},))
    x, y = torch.randn(8, 1, 20, 20), torch.arange(8) % 3
    trainer.fit(TensorDataset(x, y), progress=False)
    assert seen == pytest.approx([2 * 0.4 / 4 * k / 4 for k in range(4)])  # 2 × w / D × the linear warm-up
    assert model.kl_weight == before
