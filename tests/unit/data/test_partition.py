"""Partitioners: coverage, determinism, skew, and every parameter error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfed.data.partition import (
    PARTITIONERS,
    dirichlet,
    iid,
    partition,
    shards,
    train_val_split,
)
from rayfed.errors import DataError


def assert_exact_cover(parts: list[np.ndarray], num_samples: int) -> None:
    """Every index 0..n-1 appears in exactly one part; parts are sorted int64."""
    for p in parts:
        assert p.dtype == np.int64
        assert p.ndim == 1
        assert np.all(np.diff(p) > 0), "each part must be sorted with no repeats"
    counts = np.bincount(np.concatenate(parts), minlength=num_samples)
    assert len(counts) == num_samples
    assert np.all(counts == 1)


def balanced_labels(num_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def mean_max_class_share(parts: list[np.ndarray], labels: np.ndarray) -> float:
    shares = [np.bincount(labels[p]).max() / len(p) for p in parts if len(p)]
    return float(np.mean(shares))


def reference_dirichlet_draw(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    """Slow transcription of NIID-Bench's loop (Li et al. 2022), one attempt."""
    n = len(labels)
    batches: list[list[int]] = [[] for _ in range(num_clients)]
    for c in sorted(set(labels.tolist())):
        idx = rng.permutation(np.flatnonzero(labels == c))
        props = rng.dirichlet([alpha] * num_clients)
        props = np.array(
            [p * (len(b) < n / num_clients) for p, b in zip(props, batches, strict=True)]
        )
        props = props / props.sum()
        cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
        for b, piece in zip(batches, np.split(idx, cuts), strict=True):
            b.extend(piece.tolist())
    return batches


# ---------------------------------------------------------------- iid


@settings(max_examples=60, deadline=None)
@given(
    num_samples=st.integers(1, 500),
    num_clients=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_iid_is_exact_cover_with_near_equal_sizes(num_samples, num_clients, seed):
    if num_clients > num_samples:
        with pytest.raises(DataError, match=r"fl\.num_clients"):
            iid(num_samples, num_clients, rng=np.random.default_rng(seed))
        return
    parts = iid(num_samples, num_clients, rng=np.random.default_rng(seed))
    assert len(parts) == num_clients
    assert_exact_cover(parts, num_samples)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_determinism():
    a = iid(1000, 7, rng=np.random.default_rng(3))
    b = iid(1000, 7, rng=np.random.default_rng(3))
    c = iid(1000, 7, rng=np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------- dirichlet


@settings(max_examples=60, deadline=None)
@given(
    num_classes=st.integers(1, 10),
    per_class=st.integers(5, 40),
    num_clients=st.integers(1, 20),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_is_exact_cover(num_classes, per_class, num_clients, alpha, seed):
    labels = np.random.default_rng(seed).permutation(balanced_labels(num_classes, per_class))
    if num_clients > len(labels):
        with pytest.raises(DataError, match="more participants than samples"):
            dirichlet(labels, num_clients, alpha=alpha, rng=np.random.default_rng(seed))
        return
    parts = dirichlet(
        labels, num_clients, alpha=alpha, rng=np.random.default_rng(seed), min_samples=0
    )
    assert len(parts) == num_clients
    assert_exact_cover(parts, len(labels))


@settings(max_examples=30, deadline=None)
@given(
    num_clients=st.integers(1, 8),
    alpha=st.floats(0.1, 50.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_single_draw_matches_niid_bench_reference(num_clients, alpha, seed):
    labels = np.random.default_rng(seed + 1).integers(0, 5, size=200)
    got = dirichlet(
        labels, num_clients, alpha=alpha, rng=np.random.default_rng(seed), min_samples=0
    )
    want = reference_dirichlet_draw(labels, num_clients, alpha, np.random.default_rng(seed))
    for g, w in zip(got, want, strict=True):
        assert g.tolist() == sorted(w)


def test_dirichlet_respects_min_samples():
    labels = balanced_labels(10, 100)
    for seed in range(5):
        parts = dirichlet(labels, 20, alpha=0.1, rng=np.random.default_rng(seed), min_samples=10)
        assert min(len(p) for p in parts) >= 10
        assert_exact_cover(parts, len(labels))


def test_small_alpha_is_much_more_skewed_than_large_alpha():
    labels = np.random.default_rng(0).permutation(balanced_labels(10, 200))
    skewed = np.mean(
        [
            mean_max_class_share(
                dirichlet(labels, 10, alpha=0.1, rng=np.random.default_rng(s)), labels
            )
            for s in range(5)
        ]
    )
    near_iid = np.mean(
        [
            mean_max_class_share(
                dirichlet(labels, 10, alpha=100.0, rng=np.random.default_rng(s)), labels
            )
            for s in range(5)
        ]
    )
    # iid would give ~0.1 + sampling noise; alpha=0.1 gives mostly one or two classes.
    assert near_iid < 0.2
    assert skewed > 0.5
    assert skewed > 3 * near_iid


def test_dirichlet_determinism():
    labels = balanced_labels(10, 50)
    a = dirichlet(labels, 5, alpha=0.5, rng=np.random.default_rng(11))
    b = dirichlet(labels, 5, alpha=0.5, rng=np.random.default_rng(11))
    c = dirichlet(labels, 5, alpha=0.5, rng=np.random.default_rng(12))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_tiny_alpha_underflow_still_covers():
    # alpha this small makes Dir draws underflow to exact zeros.
    labels = balanced_labels(10, 30)
    parts = dirichlet(labels, 10, alpha=1e-4, rng=np.random.default_rng(0), min_samples=0)
    assert_exact_cover(parts, len(labels))


def test_dirichlet_gives_up_with_actionable_message():
    labels = balanced_labels(1, 20)
    with pytest.raises(DataError) as err:
        dirichlet(
            labels, 10, alpha=0.01, rng=np.random.default_rng(0), min_samples=2, max_attempts=5
        )
    msg = str(err.value)
    for key in ("partition.alpha=0.01", "fl.num_clients=10", "partition.min_samples=2", "5"):
        assert key in msg
    assert "raise partition.alpha" in msg


# ---------------------------------------------------------------- shards


@settings(max_examples=60, deadline=None)
@given(
    num_samples=st.integers(1, 400),
    num_clients=st.integers(1, 20),
    shards_per_client=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_shards_is_exact_cover(num_samples, num_clients, shards_per_client, seed):
    labels = np.random.default_rng(seed).integers(0, 10, size=num_samples)
    if num_clients * shards_per_client > num_samples:
        with pytest.raises(DataError):
            shards(
                labels,
                num_clients,
                shards_per_client=shards_per_client,
                rng=np.random.default_rng(seed),
            )
        return
    parts = shards(
        labels, num_clients, shards_per_client=shards_per_client, rng=np.random.default_rng(seed)
    )
    assert len(parts) == num_clients
    assert_exact_cover(parts, num_samples)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= shards_per_client


def test_aligned_shards_give_at_most_shards_per_client_labels():
    # 10 classes x 100 samples, 20 clients x 2 shards of 25: shards never straddle.
    labels = np.random.default_rng(1).permutation(balanced_labels(10, 100))
    parts = shards(labels, 20, shards_per_client=2, rng=np.random.default_rng(0))
    assert_exact_cover(parts, len(labels))
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    assert all(len(p) == 50 for p in parts)


@pytest.mark.parametrize("seed", range(5))
def test_straddling_shards_give_at_most_twice_shards_per_client_labels(seed):
    sizes = [37, 53, 41, 69, 30, 44]
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(6), sizes))
    parts = shards(labels, 9, shards_per_client=3, rng=np.random.default_rng(seed))
    assert_exact_cover(parts, len(labels))
    assert all(len(np.unique(labels[p])) <= 6 for p in parts)
    # An iid split of ~30 samples would show all 6 labels to nearly every client.
    assert np.mean([len(np.unique(labels[p])) for p in parts]) < 5


def test_shards_determinism():
    labels = balanced_labels(10, 30)
    a = shards(labels, 10, rng=np.random.default_rng(5))
    b = shards(labels, 10, rng=np.random.default_rng(5))
    c = shards(labels, 10, rng=np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------- dispatcher


def test_registry_names():
    assert set(PARTITIONERS) == {"iid", "dirichlet", "shards"}


def test_partition_dispatches_to_each_scheme():
    labels = balanced_labels(10, 40)

    def rng():
        return np.random.default_rng(9)

    expected = {
        "iid": iid(len(labels), 8, rng=rng()),
        "dirichlet": dirichlet(labels, 8, alpha=0.3, rng=rng(), min_samples=3),
        "shards": shards(labels, 8, shards_per_client=3, rng=rng()),
    }
    for scheme, want in expected.items():
        got = partition(
            labels, 8, scheme=scheme, rng=rng(), alpha=0.3, shards_per_client=3, min_samples=3
        )
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)), scheme


def test_partition_unknown_scheme_lists_choices():
    with pytest.raises(DataError, match=r"partition.scheme 'pathological'.*dirichlet.*iid.*shards"):
        partition(balanced_labels(2, 5), 2, scheme="pathological", rng=np.random.default_rng(0))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "key"),
    [
        (lambda r: iid(10, 0, rng=r), "fl.num_clients must be >= 1"),
        (lambda r: iid(10, 11, rng=r), "more participants than samples"),
        (lambda r: dirichlet(balanced_labels(2, 5), 0, alpha=1.0, rng=r), "fl.num_clients"),
        (lambda r: dirichlet(balanced_labels(2, 5), 11, alpha=1.0, rng=r), "more participants"),
        (lambda r: dirichlet(balanced_labels(2, 5), 2, alpha=0.0, rng=r), "partition.alpha"),
        (lambda r: dirichlet(balanced_labels(2, 5), 2, alpha=-1.0, rng=r), "partition.alpha"),
        (
            lambda r: dirichlet(balanced_labels(2, 5), 2, alpha=float("nan"), rng=r),
            "partition.alpha",
        ),
        (
            lambda r: dirichlet(balanced_labels(2, 5), 6, alpha=1.0, rng=r, min_samples=2),
            "partition.min_samples",
        ),
        (
            lambda r: dirichlet(balanced_labels(2, 5), 2, alpha=1.0, rng=r, min_samples=-1),
            "partition.min_samples",
        ),
        (lambda r: shards(balanced_labels(2, 5), 0, rng=r), "fl.num_clients"),
        (lambda r: shards(balanced_labels(2, 5), 11, rng=r), "more participants"),
        (
            lambda r: shards(balanced_labels(2, 5), 2, shards_per_client=0, rng=r),
            "partition.shards_per_client",
        ),
        (
            lambda r: shards(balanced_labels(2, 5), 4, shards_per_client=3, rng=r),
            "partition.shards_per_client",
        ),
        (
            lambda r: partition(balanced_labels(2, 5), 2, scheme="dirichlet", alpha=0, rng=r),
            "partition.alpha",
        ),
        (lambda r: train_val_split(np.arange(5), val_fraction=-0.1, rng=r), "dataset.val_fraction"),
        (lambda r: train_val_split(np.arange(5), val_fraction=1.0, rng=r), "dataset.val_fraction"),
        (lambda r: dirichlet(np.zeros((3, 2)), 1, alpha=1.0, rng=r), "1-D"),
    ],
)
def test_bad_parameters_raise_data_error_naming_the_key(call, key):
    with pytest.raises(DataError, match=key.replace(".", r"\.")) as err:
        call(np.random.default_rng(0))
    assert isinstance(err.value, ValueError)


def test_alpha_message_says_how_to_fix():
    with pytest.raises(DataError) as err:
        dirichlet(balanced_labels(2, 5), 2, alpha=-1.0, rng=np.random.default_rng(0))
    assert str(err.value) == (
        "partition.alpha must be > 0 (got -1.0); use a positive Dirichlet concentration such as 0.5"
    )


def test_all_problems_reported_at_once():
    with pytest.raises(DataError) as err:
        dirichlet(balanced_labels(2, 5), 11, alpha=-1.0, rng=np.random.default_rng(0))
    assert "fl.num_clients" in str(err.value)
    assert "partition.alpha" in str(err.value)


# ---------------------------------------------------------------- train/val


@settings(max_examples=80, deadline=None)
@given(
    indices=st.lists(st.integers(0, 10_000), max_size=200, unique=True),
    val_fraction=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_train_val_split_partitions_the_shard(indices, val_fraction, seed):
    idx = np.asarray(indices, dtype=np.int64)
    train, val = train_val_split(idx, val_fraction=val_fraction, rng=np.random.default_rng(seed))
    assert train.dtype == val.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.sort(idx))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert len(val) == min(int(np.floor(val_fraction * len(idx))), max(len(idx) - 1, 0))
    if len(idx) >= 1:
        assert len(train) >= 1


@pytest.mark.parametrize(
    ("n", "fraction", "num_val"),
    [(1, 0.5, 0), (5, 0.1, 0), (3, 0.99, 2), (100, 0.1, 10), (0, 0.2, 0)],
)
def test_train_val_split_sizes(n, fraction, num_val):
    train, val = train_val_split(
        np.arange(100, 100 + n), val_fraction=fraction, rng=np.random.default_rng(0)
    )
    assert len(val) == num_val
    assert len(train) == n - num_val


def test_train_val_split_determinism():
    idx = np.arange(0, 400, 3)
    a = train_val_split(idx, val_fraction=0.25, rng=np.random.default_rng(1))
    b = train_val_split(idx, val_fraction=0.25, rng=np.random.default_rng(1))
    c = train_val_split(idx, val_fraction=0.25, rng=np.random.default_rng(2))
    assert np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
