"""Data set registry: shapes, ranges, stratified splits, standardisation, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rayfed.data.datasets import DATASETS, ArrayDataset, load_splits
from rayfed.errors import DataError


def data_root() -> Path:
    return Path(os.environ.get("RAYFED_DATA_ROOT", "~/data")).expanduser()


# ---------------------------------------------------------------- ArrayDataset


def test_array_dataset_basics_and_subset():
    x = np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)
    ds = ArrayDataset(x, y, 3)
    assert len(ds) == 6
    assert ds.input_shape == (1, 2, 2)
    sub = ds.subset(np.array([4, 1]))
    assert len(sub) == 2
    assert sub.num_classes == 3
    assert np.array_equal(sub.y, [1, 1])
    assert np.array_equal(sub.x, x[[4, 1]])


@pytest.mark.parametrize(
    ("x", "y", "num_classes", "match"),
    [
        (np.zeros((3, 2)), np.zeros(4, dtype=np.int64), 2, "same number of rows"),
        (np.zeros((3, 2)), np.zeros((3, 1), dtype=np.int64), 2, "1-D"),
        (np.zeros((3, 2)), np.array([0, 1, 2]), 2, r"\[0, 2\)"),
        (np.zeros((3, 2)), np.zeros(3, dtype=np.int64), 0, "num_classes"),
    ],
)
def test_array_dataset_rejects_inconsistent_arrays(x, y, num_classes, match):
    with pytest.raises(DataError, match=match):
        ArrayDataset(x, y, num_classes)


# ---------------------------------------------------------------- registry


def test_registry_names():
    assert set(DATASETS) == {"digits", "breast_cancer", "mnist1d", "mnist", "cifar10"}


def test_unknown_name_lists_available():
    with pytest.raises(DataError) as err:
        load_splits("imagenet")
    msg = str(err.value)
    assert "'imagenet'" in msg
    for name in DATASETS:
        assert name in msg


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_bad_test_fraction(fraction):
    with pytest.raises(DataError, match=r"dataset\.test_fraction"):
        load_splits("digits", test_fraction=fraction)


def test_impossible_stratified_split_is_a_data_error():
    # 10 samples, 10 classes: a 20% test set cannot hold every class.
    with pytest.raises(DataError, match=r"dataset\.test_fraction"):
        load_splits("mnist1d", num_samples=10)


# ---------------------------------------------------------------- sklearn sets


def test_digits_shapes_and_ranges():
    pool, test = load_splits("digits", seed=0)
    assert len(pool) + len(test) == 1797
    assert len(test) == 360  # ceil(0.2 * 1797), sklearn's rounding
    assert pool.input_shape == test.input_shape == (1, 8, 8)
    assert pool.x.dtype == np.float32 and pool.y.dtype == np.int64
    assert pool.num_classes == 10
    assert pool.x.min() == 0.0 and pool.x.max() == 1.0
    assert set(np.unique(test.y)) == set(range(10))


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "mnist1d"])
def test_test_split_is_stratified(name):
    pool, test = load_splits(name, test_fraction=0.25, seed=3, num_samples=2000)
    all_counts = np.bincount(np.concatenate([pool.y, test.y]))
    test_counts = np.bincount(test.y, minlength=len(all_counts))
    expected = all_counts * len(test) / all_counts.sum()
    assert np.all(np.abs(test_counts - expected) <= 1.0)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "mnist1d"])
def test_splits_are_deterministic_in_seed(name):
    a_pool, a_test = load_splits(name, seed=5, num_samples=500)
    b_pool, b_test = load_splits(name, seed=5, num_samples=500)
    c_pool, _ = load_splits(name, seed=6, num_samples=500)
    assert np.array_equal(a_pool.x, b_pool.x) and np.array_equal(a_pool.y, b_pool.y)
    assert np.array_equal(a_test.x, b_test.x)
    assert not np.array_equal(a_pool.x, c_pool.x)


def test_breast_cancer_standardised_on_train_pool_only():
    pool, test = load_splits("breast_cancer", seed=0)
    assert pool.input_shape == (30,)
    assert pool.num_classes == 2
    assert pool.x.dtype == np.float32
    assert len(pool) + len(test) == 569
    assert np.allclose(pool.x.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(pool.x.std(axis=0), 1.0, atol=1e-4)
    # The test set was transformed with the pool's statistics, not its own.
    assert np.abs(test.x.mean(axis=0)).max() > 1e-3


def test_mnist1d_split_shapes():
    pool, test = load_splits("mnist1d", num_samples=1000, seed=0)
    assert pool.x.shape == (800, 1, 40)
    assert test.x.shape == (200, 1, 40)
    assert pool.x.dtype == np.float32
    assert np.array_equal(np.bincount(test.y), np.full(10, 20))


# ---------------------------------------------------------------- torchvision sets


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_sets_need_root(name):
    with pytest.raises(DataError) as err:
        load_splits(name)
    msg = str(err.value)
    assert "dataset.root" in msg
    assert "never downloads" in msg


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_sets_missing_directory(name, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_splits(name, root=str(missing))
    assert str(missing) in str(err.value)
    assert "put the" in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_sets_empty_directory(name, tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(DataError, match="has no usable"):
        load_splits(name, root=str(tmp_path))


@pytest.mark.parametrize(
    ("name", "marker", "shape", "sizes"),
    [
        ("mnist", "MNIST/raw", (1, 28, 28), (60_000, 10_000)),
        ("cifar10", "cifar-10-batches-py", (3, 32, 32), (50_000, 10_000)),
    ],
)
def test_torchvision_sets_from_local_files(name, marker, shape, sizes):
    pytest.importorskip("torchvision")
    root = data_root()
    if not (root / marker).exists():
        pytest.skip(f"{name} files not under {root} (set RAYFED_DATA_ROOT)")
    pool, test = load_splits(name, root=str(root))
    assert (len(pool), len(test)) == sizes
    assert pool.input_shape == test.input_shape == shape
    assert pool.x.dtype == np.float32 and pool.y.dtype == np.int64
    assert pool.x.min() >= 0.0 and pool.x.max() <= 1.0
    assert set(np.unique(test.y)) == set(range(10))


class _FakeSplit:
    """Mimics the attributes of torchvision's MNIST/CIFAR10 objects that we read."""

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        import torch

        assert download is False, "rayfed must never ask torchvision to download"
        if not (Path(root) / "present").exists():
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        n = 6 if train else 4
        self.targets_list = [i % 10 for i in range(n)]
        if self.kind == "mnist":
            self.data = torch.full((n, 28, 28), 255, dtype=torch.uint8)
            self.targets = torch.tensor(self.targets_list)
        else:
            data = np.zeros((n, 32, 32, 3), dtype=np.uint8)
            data[..., 2] = 255  # only the blue channel is lit
            self.data = data
            self.targets = self.targets_list


@pytest.fixture
def fake_torchvision(monkeypatch):
    import sys
    import types

    module = types.ModuleType("torchvision")
    module.datasets = types.SimpleNamespace(
        MNIST=type("MNIST", (_FakeSplit,), {"kind": "mnist"}),
        CIFAR10=type("CIFAR10", (_FakeSplit,), {"kind": "cifar10"}),
    )
    monkeypatch.setitem(sys.modules, "torchvision", module)


def test_torchvision_conversion_with_fake_module(fake_torchvision, tmp_path):
    with pytest.raises(DataError, match="has no usable mnist files"):
        load_splits("mnist", root=str(tmp_path))
    (tmp_path / "present").touch()

    pool, test = load_splits("mnist", root=str(tmp_path))
    assert (len(pool), len(test)) == (6, 4)
    assert pool.x.shape == (6, 1, 28, 28) and pool.x.dtype == np.float32
    assert np.all(pool.x == 1.0)
    assert pool.y.dtype == np.int64 and pool.y.tolist() == [0, 1, 2, 3, 4, 5]

    pool, test = load_splits("cifar10", root=str(tmp_path))
    assert pool.x.shape == (6, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
    # Channels moved first: only channel 2 is lit.
    assert np.all(pool.x[:, 2] == 1.0) and np.all(pool.x[:, :2] == 0.0)
    assert test.y.dtype == np.int64
