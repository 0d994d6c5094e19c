import gzip
import shutil

import numpy as np
import pytest

from pyro_pstn.data import (
    MNIST_SPEC,
    SUBSET_SIZES,
    DataError,
    balanced_folds,
    dataset_names,
    download,
    load_dataset,
    read_idx,
    write_idx,
)
from pyro_pstn.data.datasets import load_idx_pair, subset_indices


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_round_trip(tmp_path, suffix):
    array = np.random.default_rng(0).integers(0, 255, size=(7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / f"a{suffix}", array)
    np.testing.assert_array_equal(read_idx(tmp_path / f"a{suffix}"), array)


def test_corrupt_idx_files_are_reported(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01abcd")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    array = np.zeros((4, 2), dtype=np.uint8)
    write_idx(tmp_path / "short", array)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(DataError, match="size mismatch"):
        read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (4).to_bytes(4, "big") + b"abcd")[:-6])
    with pytest.raises(DataError, match="cannot decompress"):
        read_idx(tmp_path / "broken.gz")


def test_real_mnist_has_the_official_shapes(data_root):
    images, labels = load_idx_pair(str(data_root), "mnist", "train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels)[:3], [5923, 6742, 5958])
    test_images, _ = load_idx_pair(str(data_root), "mnist", "t10k")
    assert test_images.shape == (10000, 28, 28)


@pytest.mark.parametrize("n", SUBSET_SIZES)
def test_authors_folds_have_size_n_and_are_disjoint_from_validation(data_root, n):
    _, labels = load_idx_pair(str(data_root), "mnist", "train")
    folds = []
    for fold in range(5):
        train, val, source = subset_indices(data_root, n, fold, labels)
        assert "authors" in source
        assert len(train) == n and len(val) == 10000
        assert np.intersect1d(train, val).size == 0
        folds.append(train)
    assert len(np.unique(np.concatenate(folds))) == 5 * n


def test_load_dataset_splits(data_root):
    d = load_dataset("mnist30", data_root, fold=2, val_size=200, test_size=500)
    assert (len(d.train), len(d.val), len(d.test)) == (30, 200, 500)
    assert d.train.images.shape == (30, 1, 28, 28)
    assert d.background == pytest.approx(-0.1307 / 0.3081) == MNIST_SPEC.fill
    assert d.spec == MNIST_SPEC
    # normalised with the training-set statistics of full MNIST
    full = load_dataset("mnist", data_root, val_size=None)
    assert (len(full.train), len(full.val), len(full.test)) == (50000, 10000, 10000)
    assert float(full.train.images.mean()) == pytest.approx(0.0, abs=0.01)
    fashion = load_dataset("fashion_mnist", data_root, test_size=10)
    assert len(fashion.test) == 10 and fashion.mean == 0.2860 and fashion.spec.mean == (0.2860,)


def test_fallback_sampler_without_fold_files(tmp_path, data_root):
    root = tmp_path / "root"
    root.mkdir()
    (root / "MNIST").symlink_to(data_root / "MNIST")
    d = load_dataset("mnist100", root, fold=1, val_size=None, test_size=10)
    assert "seeded class-balanced" in d.source
    assert d.train.labels.bincount().tolist() == [10] * 10
    labels = np.random.default_rng(0).integers(0, 10, size=5000)
    folds, val = balanced_folds(labels, 30)
    assert all(len(f) == 30 for f in folds)
    everything = np.concatenate(folds + [val])
    assert len(np.unique(everything)) == len(everything)


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist30", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"looked in .*MNIST/raw.*PYRO_PSTN_DATA"):
        load_dataset("mnist30", tmp_path)


def test_bad_names_and_folds_list_valid_values(data_root):
    with pytest.raises(DataError, match="valid names: mnist, fashion_mnist, mnist10"):
        load_dataset("mnist31", data_root)
    with pytest.raises(DataError, match="fold must be in 0..4"):
        load_dataset("mnist30", data_root, fold=5)
    assert {"mnist10000", "mario_iggy90", "mnist01569", "rotated_mnist", "augmented_fashion_mnist"} <= set(dataset_names())


def test_download_verifies_checksums(tmp_path, data_root):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in (data_root / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(f, mirror / f.name)
    written = download("MNIST", tmp_path / "root", base_url=mirror.as_uri() + "/")
    assert len(written) == 4
    assert read_idx(tmp_path / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").shape == (10000,)
    # a corrupted mirror: the download is rejected and nothing is left behind
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not mnist")
    with pytest.raises(DataError, match="SHA-256"):
        download("MNIST", tmp_path / "other", base_url=mirror.as_uri() + "/")
    assert not (tmp_path / "other" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list((tmp_path / "other" / "MNIST" / "raw").glob(".*"))
