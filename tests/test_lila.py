"""LILA's subset protocol (issue 35, item 3): the transformed sets and subsets are LILA's."""
import json
import math

import numpy as np
import pytest
import torch

from pyro_pstn.data import DataError, dataset_ndim, is_dataset_name, lila_transformed, load_dataset
from pyro_pstn.data.datasets import load_idx_pair
from pyro_pstn.data.lila import subset_permutation


def _centroid(images: torch.Tensor) -> torch.Tensor:
    """(x, y) centre of mass of ``[N, H, W]`` images, in pixels from the image centre."""
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    mass = images.double().sum((-2, -1))
    return torch.stack([(images * xs).sum((-2, -1)) / mass, (images * ys).sum((-2, -1)) / mass], -1)


def test_each_image_is_rotated_by_lilas_seeded_draw():
    """A blob 8 px right of the centre, rotated as LILA rotates the training split: the draws are
    LILA's (``torch.manual_seed(1); (torch.rand(N) * 2 − 1) · π``), and the blob ends up at that angle
    (affine_grid maps output to input, so the content turns by −θ in image coordinates, y down)."""
    n = 64
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 12:16, 20:24] = 255
    out = lila_transformed(images, "rotate", 180.0, seed=1)
    torch.manual_seed(1)
    angles = (torch.rand(n) * 2 - 1) * math.pi
    start = _centroid(images)[0]
    expected = torch.stack([start[0] * torch.cos(angles), -start[0] * torch.sin(angles)], -1)
    assert (_centroid(out) - expected).norm(dim=-1).max() < 0.6  # pixels
    assert out.dtype == torch.uint8


def test_translations_and_zooms_stay_within_lilas_ranges():
    images = torch.zeros(200, 28, 28, dtype=torch.uint8)
    images[:, 12:16, 12:16] = 200
    shifted = _centroid(lila_transformed(images, "translate", 8.0, seed=0)) - _centroid(images)
    assert shifted.abs().max() <= 8.0 + 0.3 and shifted.abs().max() > 6.0  # U(±8 px) per axis
    zoomed = lila_transformed(images, "scale", math.log(2.0), seed=0).double().sum((-2, -1)) / images.double().sum((-2, -1))
    assert zoomed.min() > 0.2 and zoomed.max() < 4.5  # area ×(1/2)² … ×2², as exp(U(±log 2)) zooms the grid


def test_a_subset_is_lilas_permutation_and_the_test_set_is_whole(data_root):
    data = load_dataset("lila/mnist_r90/312", data_root, fold=2, val_size=100)
    torch.manual_seed(2)  # LILA: set_seed(seed); torch.randperm(len(train))[:subset_size]
    order = torch.randperm(60000)
    assert torch.equal(order, subset_permutation(2))
    _, labels = load_idx_pair(str(data_root), "mnist", "train")
    assert torch.equal(data.train.labels, torch.from_numpy(labels[order[:312].numpy()].astype(np.int64)))
    assert torch.equal(data.val.labels, torch.from_numpy(labels[order[312:412].numpy()].astype(np.int64)))
    assert len(data.test) == 10000 and data.spec.shape == (1, 28, 28)
    assert np.ravel(data.spec.fill)[0] == pytest.approx(-0.1307 / 0.3081)  # zero padding is the background
    plain = load_dataset("lila/mnist/312", data_root, fold=2, val_size=100)
    assert torch.equal(plain.train.labels, data.train.labels)  # the subset depends on the seed only


def test_lila_names_are_checked_with_the_valid_ones_listed(data_root):
    assert is_dataset_name("lila/fmnist_r180/1250") and dataset_ndim("lila/scaled_mnist/5000") == 2
    for name in ("lila/mnist_r45/312", "lila/mnist/313", "lila/mnist", "lila/mnist/312/extra"):
        with pytest.raises(DataError, match=r"valid: lila/<set>/<N> with <set> one of mnist, mnist_r90"):
            load_dataset(name, data_root)
    with pytest.raises(DataError, match="a whole number ≥ 0"):
        load_dataset("lila/mnist/312", data_root, fold=-1)


def test_the_study_fits_resumes_and_rebuilds_its_table(data_root, tmp_path):
    from click.testing import CliRunner

    from experiments.lila import main

    args = ["--sets", "mnist_r180", "--sizes", "312", "--models", "cnn", "--seeds", "1", "--epochs", "1", "--results-dir",
            str(tmp_path / "results"), "--run-root", str(tmp_path / "runs"), "--threads", "1"]
    result = CliRunner().invoke(main, args, env={"PYRO_PSTN_DATA": str(data_root)})
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "results" / "lila" / "runs" / "cnn-lila-mnist_r180-312-seed1.json").read_text())
    assert record["data"] == "lila/mnist_r180/312" and record["fold"] == 1 and record["config"]["train"]["seed"] == 1
    table = (tmp_path / "results" / "lila.md").read_text()
    assert "## mnist_r180 (seeds 1)" in table and "| cnn | " in table and "312 → 100" in table
    result = CliRunner().invoke(main, [*args, "--aggregate-only"], env={"PYRO_PSTN_DATA": str(data_root)})
    assert result.exit_code == 0 and (tmp_path / "results" / "lila.md").read_text() == table
    result = CliRunner().invoke(main, ["--sets", "mnist_r45", "--results-dir", str(tmp_path / "other")])
    assert result.exit_code == 2 and "mnist_r180" in result.output and not (tmp_path / "other" / "lila").exists()
