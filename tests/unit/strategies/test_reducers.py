"""Reducers: hand-computed values, invariants (hypothesis) and a slow Krum oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rayfed.errors import AggregationError
from rayfed.strategies.reducers import (
    REDUCERS,
    coordinate_median,
    krum,
    krum_scores,
    krum_select,
    reduce,
    trimmed_mean,
    weighted_mean,
)

# (registry name, params, fewest updates it accepts). Every reducer must appear.
CASES = [
    ("weighted_mean", {}, 1),
    ("median", {}, 1),
    ("trimmed_mean", {"trim_ratio": 0.2}, 1),
    ("trimmed_mean", {"trim_ratio": 0.0}, 1),
    ("krum", {"num_byzantine": 1}, 5),
    ("krum", {"num_byzantine": 1, "num_selected": 3}, 5),
]
CASE_IDS = [f"{name}-{params}" for name, params, _ in CASES]

finite32 = st.floats(-1e3, 1e3, width=32, allow_nan=False, allow_infinity=False)


def test_every_reducer_has_a_case():
    assert {name for name, _, _ in CASES} == set(REDUCERS)


# --- hand-computed values -----------------------------------------------------------


def test_weighted_mean_by_hand():
    # ([1, 2] * 1 + [3, 4] * 3) / 4 = [10, 14] / 4 = [2.5, 3.5]
    updates = np.array([[1, 2], [3, 4]], dtype=np.float32)
    out = weighted_mean(updates, np.array([1, 3]))
    np.testing.assert_array_equal(out, [2.5, 3.5])
    assert out.dtype == np.float32


def test_median_by_hand():
    # column 0: {1, 2, 100} -> 2; column 1: {10, 20, -5} -> 10
    updates = np.array([[1, 10], [2, 20], [100, -5]], dtype=np.float32)
    np.testing.assert_array_equal(coordinate_median(updates), [2, 10])
    # even count: mean of the two middle values, (2 + 3) / 2 = 2.5
    np.testing.assert_array_equal(coordinate_median(np.array([[4], [1], [3], [2]])), [2.5])


def test_trimmed_mean_by_hand():
    updates = np.array([[1], [2], [3], [4], [100]], dtype=np.float32)
    # floor(0.2 * 5) = 1 dropped at each end: mean(2, 3, 4) = 3
    np.testing.assert_array_equal(trimmed_mean(updates, trim_ratio=0.2), [3])
    # floor(0.1 * 5) = 0 dropped: mean(1, 2, 3, 4, 100) = 110 / 5 = 22
    np.testing.assert_array_equal(trimmed_mean(updates, trim_ratio=0.1), [22])
    # floor(0.49 * 5) = 2 dropped at each end: only the middle value, 3
    np.testing.assert_array_equal(trimmed_mean(updates, trim_ratio=0.49), [3])


def test_trimmed_mean_counts_a_written_ratio_as_written():
    # 0.29 * 100 is 28.999999999999996 in floating point; 29 must still be dropped.
    updates = np.arange(100, dtype=np.float32)[:, None]
    # keeps 29..70, whose mean is 49.5
    np.testing.assert_array_equal(trimmed_mean(updates, trim_ratio=0.29), [49.5])


def test_krum_by_hand():
    # Points on a line (second coordinate 0), n = 5, f = 1: n - f - 2 = 2 neighbours.
    # squared distances to the two nearest others:
    #   0: 1 (to 1) + 4 (to 2) = 5      1: 1 + 1 = 2      2: 1 + 4 = 5
    #   4: 4 (to 2) + 9 (to 1) = 13     10: 36 (to 4) + 64 (to 2) = 100
    updates = np.array([[0, 0], [1, 0], [2, 0], [4, 0], [10, 0]], dtype=np.float32)
    np.testing.assert_array_equal(krum_scores(updates, num_byzantine=1), [5, 2, 5, 13, 100])
    np.testing.assert_array_equal(krum(updates, num_byzantine=1), [1, 0])
    # Multi-Krum, 3 best: scores 2, 5, 5 -> points 1, 0, 2 -> mean 1
    assert set(krum_select(updates, num_byzantine=1, num_selected=3).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(krum(updates, num_byzantine=1, num_selected=3), [1, 0])


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "f"), [(4, 1), (6, 2), (2, 0), (0, 0)])
def test_krum_rejects_too_few_updates(n, f):
    updates = np.zeros((n, 3), dtype=np.float32)
    match = "strategy.num_byzantine" if n else "non-empty"
    with pytest.raises(AggregationError, match=match) as info:
        krum(updates, num_byzantine=f)
    if n:
        assert f"n={n}" in str(info.value)


def test_krum_accepts_exactly_2f_plus_3():
    updates = np.array([[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [0.05, 0.05],
                        [100, 100], [-100, 50]], dtype=np.float32)
    result = krum(updates, num_byzantine=2)
    # n=7, f=2: scores sum the 3 nearest squared distances. The centre of the
    # honest square scores 3 x 0.005; each corner 0.005 + 2 x 0.01: the centre wins.
    np.testing.assert_array_equal(result, updates[4])


def test_krum_rejects_too_many_selected():
    with pytest.raises(AggregationError, match=r"strategy\.num_selected"):
        krum(np.zeros((5, 2)), num_byzantine=1, num_selected=5)


@pytest.mark.parametrize("trim_ratio", [0.5, -0.1, 1.0, float("nan")])
def test_trimmed_mean_rejects_bad_ratio(trim_ratio):
    with pytest.raises(AggregationError, match=r"strategy\.trim_ratio"):
        trimmed_mean(np.zeros((4, 2)), trim_ratio=trim_ratio)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([0, 0], "sum to 0"),
        ([1, -1], ">= 0"),
        ([1, 2, 3], "shape"),
        (None, "needs weights"),
        ([1, float("inf")], "finite"),
    ],
)
def test_weighted_mean_rejects_bad_weights(weights, match):
    with pytest.raises(AggregationError, match=match):
        weighted_mean(np.ones((2, 3)), None if weights is None else np.array(weights))


@pytest.mark.parametrize("updates", [np.ones(3), np.ones((0, 3)), np.ones((2, 3, 1))])
def test_reducers_reject_bad_shapes(updates):
    with pytest.raises(AggregationError, match=r"\(k, d\)"):
        coordinate_median(updates)


def test_reducers_reject_non_finite_updates():
    updates = np.ones((3, 2))
    updates[1, 0] = np.nan
    with pytest.raises(AggregationError, match=r"rows \[1\]"):
        weighted_mean(updates, np.ones(3))


def test_reduce_unknown_name_lists_valid_ones():
    with pytest.raises(AggregationError, match="krum") as info:
        reduce("mode", np.ones((2, 2)), np.ones(2))
    assert "strategy.reducer" in str(info.value)


def test_reduce_dispatches():
    updates = np.array([[1, 2], [3, 4]], dtype=np.float32)
    out = reduce("trimmed_mean", updates, np.ones(2), trim_ratio=0.0)
    np.testing.assert_array_equal(out, [2, 3])


# --- contract over every registry entry ---------------------------------------------


@pytest.mark.parametrize(("name", "params", "min_rows"), CASES, ids=CASE_IDS)
def test_reducer_contract(name, params, min_rows):
    rng = np.random.default_rng(0)
    k, d = max(min_rows, 7), 4
    updates = rng.normal(size=(k, d)).astype(np.float32)
    weights = rng.integers(1, 100, size=k)
    before_u, before_w = updates.copy(), weights.copy()

    out = reduce(name, updates, weights, **params)

    assert out.shape == (d,)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(updates, before_u)  # inputs untouched
    np.testing.assert_array_equal(weights, before_w)
    # within the per-coordinate hull of the updates
    assert np.all(out >= updates.min(axis=0) - 1e-6)
    assert np.all(out <= updates.max(axis=0) + 1e-6)
    np.testing.assert_array_equal(reduce(name, updates, weights, **params), out)


# --- invariants (hypothesis) ---------------------------------------------------------


@pytest.mark.parametrize(("name", "params", "min_rows"), CASES, ids=CASE_IDS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_identical_updates_give_that_update(name, params, min_rows, data):
    k = data.draw(st.integers(min_rows, min_rows + 6))
    row = data.draw(hnp.arrays(np.float32, st.integers(1, 6), elements=finite32))
    weights = data.draw(hnp.arrays(np.int64, k, elements=st.integers(1, 1000)))
    updates = np.tile(row, (k, 1))
    np.testing.assert_array_equal(reduce(name, updates, weights, **params), row)


@pytest.mark.parametrize(("name", "params", "min_rows"), CASES, ids=CASE_IDS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_permutation_invariance(name, params, min_rows, data):
    k = data.draw(st.integers(min_rows, min_rows + 6))
    d = data.draw(st.integers(1, 6))
    # A few distinct values make ties (equal rows, equal Krum scores) common.
    elements = finite32 | st.sampled_from([0.0, 1.0, -1.0])
    updates = data.draw(hnp.arrays(np.float32, (k, d), elements=elements))
    weights = data.draw(hnp.arrays(np.int64, k, elements=st.integers(1, 1000)))
    perm = np.array(data.draw(st.permutations(range(k))), dtype=np.intp)

    out = reduce(name, updates, weights, **params)
    permuted = reduce(name, updates[perm], weights[perm], **params)
    # Bit for bit, weighted mean included: sums run in value order, not arrival order.
    np.testing.assert_array_equal(permuted, out)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_krum_selection_follows_the_permutation(data):
    n = data.draw(st.integers(5, 10))
    seed = data.draw(st.integers(0, 2**32 - 1))
    updates = np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)
    perm = np.array(data.draw(st.permutations(range(n))), dtype=np.intp)
    selected = krum_select(updates, num_byzantine=1, num_selected=2)
    selected_after = krum_select(updates[perm], num_byzantine=1, num_selected=2)
    np.testing.assert_array_equal(perm[selected_after], selected)


# --- robustness ------------------------------------------------------------------------


def _honest_plus_outlier(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    honest = 1.0 + 0.01 * rng.normal(size=(5, 8))
    outlier = np.full((1, 8), 1e6)
    return np.vstack([honest, outlier]).astype(np.float32), honest


def test_krum_ignores_an_outlier():
    updates, _ = _honest_plus_outlier(np.random.default_rng(1))
    assert 5 not in krum_select(updates, num_byzantine=1, num_selected=4).tolist()
    out = krum(updates, num_byzantine=1)
    assert np.all(np.abs(out - 1.0) < 0.1)
    # the weighted mean, in contrast, is dragged far away
    assert np.all(weighted_mean(updates, np.ones(6)) > 1e5)


@pytest.mark.parametrize(
    ("reducer", "params"), [(coordinate_median, {}), (trimmed_mean, {"trim_ratio": 0.2})]
)
def test_coordinatewise_rules_resist_an_outlier(reducer, params):
    updates, honest = _honest_plus_outlier(np.random.default_rng(2))
    out = reducer(updates, **params)
    assert np.all(out >= honest.min(axis=0) - 1e-6)
    assert np.all(out <= honest.max(axis=0) + 1e-6)


# --- slow, obviously correct oracles -------------------------------------------------


def krum_oracle(rows: list[list[float]], f: int, m: int) -> tuple[list[float], list[int]]:
    """Krum scores and the m best indices, with plain Python loops."""
    n = len(rows)
    scores = []
    for i in range(n):
        dists = []
        for j in range(n):
            if j != i:
                dists.append(sum((a - b) ** 2 for a, b in zip(rows[i], rows[j], strict=True)))
        dists.sort()
        scores.append(sum(dists[: n - f - 2]))
    best = sorted(range(n), key=lambda i: scores[i])[:m]
    return scores, best


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_krum_matches_slow_oracle(data):
    f = data.draw(st.integers(0, 3))
    n = data.draw(st.integers(2 * f + 3, 2 * f + 8))
    m = data.draw(st.integers(1, n - f))
    d = data.draw(st.integers(1, 8))
    seed = data.draw(st.integers(0, 2**32 - 1))
    updates = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    rows = updates.astype(float).tolist()

    scores, best = krum_oracle(rows, f, m)

    np.testing.assert_allclose(krum_scores(updates, num_byzantine=f), scores, rtol=1e-9)
    selected = krum_select(updates, num_byzantine=f, num_selected=m).tolist()
    # Ties are real (with one neighbour, two mutually nearest updates score the same),
    # and each side breaks them its own way; the selected scores must still be the best.
    np.testing.assert_allclose([scores[i] for i in selected], [scores[i] for i in best])
    expected = [sum(rows[i][c] for i in selected) / m for c in range(d)]
    np.testing.assert_allclose(
        krum(updates, num_byzantine=f, num_selected=m), expected, rtol=1e-6, atol=1e-6
    )


def trimmed_mean_oracle(rows: list[list[float]], trim_ratio: float) -> list[float]:
    k = len(rows)
    b = int(trim_ratio * k + 1e-9)
    out = []
    for c in range(len(rows[0])):
        column = sorted(row[c] for row in rows)
        kept = column[b : k - b]
        out.append(sum(kept) / len(kept))
    return out


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_trimmed_mean_matches_slow_oracle(data):
    k = data.draw(st.integers(1, 12))
    d = data.draw(st.integers(1, 5))
    trim_ratio = data.draw(st.floats(0, 0.49))
    updates = data.draw(hnp.arrays(np.float32, (k, d), elements=finite32))
    expected = trimmed_mean_oracle(updates.astype(float).tolist(), trim_ratio)
    np.testing.assert_allclose(
        trimmed_mean(updates, trim_ratio=trim_ratio), expected, rtol=1e-6, atol=1e-4
    )
