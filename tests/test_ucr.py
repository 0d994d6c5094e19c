"""UCR time series (issue 13): readers, the ucr/<Name> data sets, the authors' 1-D networks, a fit."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pyro_pstn.data import DataError, DataSpec, load_dataset
from pyro_pstn.data.ucr import read_ucr_file, stratified_split
from pyro_pstn.models import build_model
from pyro_pstn.nets import count_parameters, ucr_classifier, ucr_localizer


def test_both_file_formats_are_read_with_labels_mapped_in_value_order(tmp_path):
    tsv = tmp_path / "A_TRAIN.tsv"
    tsv.write_text("2\t0.5\t1.0\t-1\n10\t0\t0\t0\n2\t1\t2\t3\n")
    x, labels = read_ucr_file(tsv)
    assert x.shape == (3, 3) and x.dtype == np.float32 and labels == ["2", "10", "2"]
    ts = tmp_path / "B_TRAIN.ts"
    ts.write_text("# a comment\n@problemName B\n@classLabel true a b\n@data\n1.0,2.0,3.5:b\n0,0,1:a\n")
    x, labels = read_ucr_file(ts)
    assert x.tolist() == [[1.0, 2.0, 3.5], [0.0, 0.0, 1.0]] and labels == ["b", "a"]
    from pyro_pstn.data.ucr import label_map

    assert label_map(["2", "10"], ["1"]) == {"1": 0, "2": 1, "10": 2}  # numeric order, not "10" < "2"


@pytest.mark.parametrize("name, text, message", [
    ("r_TRAIN.tsv", "1\t0.1\t0.2\n2\t0.3\n", "different lengths.*ragged"),
    ("m_TRAIN.tsv", "1\t0.1\tNaN\n", "line 1: the series has missing values"),
    ("q_TRAIN.ts", "@data\n0.1,?,0.3:1\n", "line 2: the series has missing values"),
    ("n_TRAIN.ts", "0.1,0.2:1\n", "no @data line"),
    ("v_TRAIN.ts", "@data\n0.1,0.2:0.3,0.4:1\n", "multivariate"),
    ("w_TRAIN.tsv", "1\t0.1\tabc\n", "line 1: a value is not a number"),
    ("e_TRAIN.tsv", "\n", "holds no series"),
    ("x_TRAIN.csv", "1,2\n", "unknown UCR format '.csv'"),
])
def test_bad_ucr_files_say_what_is_wrong(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_ucr_file(path)
    binary = tmp_path / "b_TRAIN.tsv"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="cannot be read as a UCR text file"):
        read_ucr_file(binary)


def test_ucr_data_sets_split_the_training_file_stratified_and_keep_the_curators_test(data_root):
    data = load_dataset("ucr/FaceAll", data_root)
    assert data.num_classes == 14 and data.train.images.shape == (420, 1, 131) and len(data.test) == 1690
    assert data.train.labels.bincount().tolist() == [30] * 14 and data.val.labels.bincount().tolist() == [10] * 14
    assert abs(float(data.train.images.mean())) < 1e-3  # the archive's z-normalisation, nothing added
    again, other = load_dataset("ucr/FaceAll", data_root), load_dataset("ucr/FaceAll", data_root, fold=1)
    assert torch.equal(again.val.images, data.val.images) and not torch.equal(other.val.images, data.val.images)
    gun = load_dataset("ucr/GunPoint", data_root)  # the .ts format
    assert gun.num_classes == 2 and gun.test.images.shape == (150, 1, 150)
    with pytest.raises(DataError, match="ucr/ArrowHead.*ucr/FaceAll"):
        load_dataset("ucr/NoSuchSet", data_root)
    train, val = stratified_split(np.array([0] * 8 + [1] * 4), seed=3)
    assert len(val) == 3 and set(train).isdisjoint(val) and len(train) + len(val) == 12


def test_the_authors_ucr_networks_have_their_parameter_counts():
    """anchors.md §1.3: CNN 1,196,314, STN 1,197,423, P-STN 1,198,008 with 14 classes and θ ∈ R⁹."""
    assert count_parameters(ucr_classifier(14, baseline=True)) == 1_196_314
    assert count_parameters(ucr_classifier(14)) == 1_111_482
    assert count_parameters(ucr_localizer("cpab1d")) == 86_526
    counts = {m: count_parameters(build_model(m, DataSpec((1, 131), 14))) for m in ("cnn", "stn", "pstn")}
    assert counts == {"cnn": 1_196_314, "stn": 1_197_423, "pstn": 1_198_008}
    model = build_model("gamma_pstn", DataSpec((1, 131), 14))
    loc, rate = model.localizer(torch.randn(3, 1, 131))
    assert torch.equal(loc, torch.zeros(3, 9)) and rate.shape == (3, 9)  # identity-initialised heads
    with pytest.raises(ValueError, match="similarity family warps 2-D inputs, but the data are series"):
        build_model("pstn", DataSpec((1, 131), 14), layout="similarity")


def test_fit_on_a_ucr_data_set_leaves_a_run_directory(tmp_path, data_root):
    from experiments.fit import main
    from inference.kinds import load_run

    # the command names the 1-D family, as a user copying it from the papers would
    args = ["--model", "gamma_pstn", "--data", "ucr/ItalyPowerDemand", "--layout", "cpab1d", "--epochs", "2",
            "--train-samples", "2",
            "--test-size", "100", "--data-root", str(data_root), "--out-dir", str(tmp_path), "--run-name", "ucr",
            "--no-progress"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = tmp_path / "ucr"
    assert {"augmentations.png", "reliability.png", "posterior.nc", "metrics.json"} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["layout"] == "cpab1d" and config["train"]["batch_size"] == 16 and config["train"]["weight_decay"] == 0
    assert config["train"]["kl_weight"] == 1e-4
    loaded = load_run(run)
    model, metrics = loaded.model, loaded.metrics
    assert model.event_dim == 2 and metrics["n_test"] == 100 and metrics["theta_posterior_std"] > 0
    bad = CliRunner().invoke(main, ["--data", "ucr", "--out-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "ucr/<Name>" in bad.output


@pytest.mark.parametrize("layout, message", [
    ("similarity", "the similarity family warps 2-D inputs, but the data are series: series take cpab1d, time_affine"),
    ("cpab", "the cpab family warps 2-D inputs"),
])
def test_an_image_family_on_series_exits_2_and_writes_nothing(tmp_path, data_root, layout, message):
    from experiments.fit import main

    args = ["--model", "stn", "--data", "ucr/ItalyPowerDemand", "--layout", layout, "--epochs", "1",
            "--data-root", str(data_root), "--out-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "runs").exists()


def test_series_families_are_chosen_by_name_in_a_config():
    from experiments.config import authors_config

    for layout in ("cpab1d", "time_affine"):
        assert authors_config("pstn", "ucr/GunPoint", layout=layout).layout == layout
    assert authors_config("pstn", "ucr/GunPoint").layout == "cpab1d"
    with pytest.raises(ValueError, match="the time_affine family warps 1-D inputs, but the data are images"):
        authors_config("pstn", "mnist30", layout="time_affine")
