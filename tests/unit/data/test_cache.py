"""The prepared-split cache: built once, read back identical, never an error."""

from __future__ import annotations

import numpy as np
import pytest

from rayfed.data.cache import cached_splits
from rayfed.data.datasets import load_splits


def _builder(calls: list[int]):
    def build():
        calls.append(1)
        rng = np.random.default_rng(len(calls))
        return ((rng.normal(size=(5, 3)).astype(np.float32), np.arange(5)),
                (rng.normal(size=(2, 3)).astype(np.float32), np.arange(2)))
    return build


def test_built_once_then_read_back_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFED_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    first = cached_splits({"name": "toy", "seed": 1}, _builder(calls))
    again = cached_splits({"name": "toy", "seed": 1}, _builder(calls))
    other = cached_splits({"name": "toy", "seed": 2}, _builder(calls))
    assert len(calls) == 2  # seed 1 once, seed 2 once
    for a, b in zip([*first[0], *first[1]], [*again[0], *again[1]], strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert not np.array_equal(first[0][0], other[0][0])
    assert not list(tmp_path.rglob("*.tmp"))


def test_damaged_entry_is_rebuilt_and_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFED_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    cached_splits({"name": "toy"}, _builder(calls))
    (entry,) = tmp_path.rglob("*.npz")
    entry.write_bytes(b"not an npz")
    rebuilt = cached_splits({"name": "toy"}, _builder(calls))
    assert len(calls) == 2 and rebuilt[0][0].shape == (5, 3)

    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("RAYFED_CACHE_DIR", str(blocker))
    assert cached_splits({"name": "toy"}, _builder(calls))[1][1].tolist() == [0, 1]

    monkeypatch.setenv("RAYFED_CACHE_DIR", "")  # empty: caching off
    cached_splits({"name": "toy"}, _builder(calls))
    cached_splits({"name": "toy"}, _builder(calls))
    assert len(calls) == 5


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "mnist1d"])
def test_cached_data_sets_equal_a_fresh_build(name, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFED_CACHE_DIR", "")
    fresh = load_splits(name, seed=4, num_samples=600)
    monkeypatch.setenv("RAYFED_CACHE_DIR", str(tmp_path))
    for _ in range(2):  # the miss that writes, then the hit that reads
        pool, test = load_splits(name, seed=4, num_samples=600)
        assert np.array_equal(pool.x, fresh[0].x) and np.array_equal(pool.y, fresh[0].y)
        assert np.array_equal(test.x, fresh[1].x) and test.x.dtype == np.float32
    assert len(list(tmp_path.rglob("*.npz"))) == 1
