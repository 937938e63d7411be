"""Update codecs: property tests against slow, obviously correct references."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rayfed.compression.codecs import (
    densify,
    dequantize_int8,
    int8_scales,
    quantize_int8,
    sparsify,
    sparsify_with_feedback,
    topk_count,
)

finite = st.floats(-1e6, 1e6, width=32, allow_subnormal=False)


@st.composite
def update_and_sizes(draw: st.DrawFn, max_len: int = 200) -> tuple[np.ndarray, list[int]]:
    x = draw(arrays(np.float32, st.integers(1, max_len), elements=finite))
    cuts = sorted(draw(st.sets(st.integers(1, max(x.size - 1, 1)), max_size=4)))
    cuts = [c for c in cuts if c < x.size]
    sizes = np.diff([0, *cuts, x.size]).tolist()
    return x, sizes


def reference_scales(x: np.ndarray, sizes: list[int]) -> list[float]:
    out, start = [], 0
    for n in sizes:
        out.append(float(np.float32(max(abs(float(v)) for v in x[start:start + n]) / 127)))
        start += n
    return out


@settings(max_examples=60, deadline=None)
@given(update_and_sizes(), st.integers(0, 2**31))
def test_dequantize_is_within_one_step_per_tensor(case, seed) -> None:
    x, sizes = case
    u = quantize_int8(x, sizes=sizes, rng=np.random.default_rng(seed))
    assert u.codes.dtype == np.int8 and u.scales.dtype == np.float32
    assert np.allclose(u.scales, reference_scales(x, sizes), rtol=1e-6, atol=0)
    step = np.repeat(u.scales.astype(np.float64), sizes)
    err = np.abs(dequantize_int8(u).astype(np.float64) - x.astype(np.float64))
    # Below one step, plus float32 rounding of the product s · q.
    assert (err <= step * (1 + 1e-6) + 1e-30).all()


@settings(max_examples=20, deadline=None)
@given(update_and_sizes(max_len=20), st.integers(0, 2**31))
def test_stochastic_rounding_is_unbiased(case, seed) -> None:
    x, sizes = case
    rng = np.random.default_rng(seed)
    draws = 3000
    mean = np.mean([dequantize_int8(quantize_int8(x, sizes=sizes, rng=rng))
                    for _ in range(draws)], axis=0, dtype=np.float64)
    step = np.repeat(int8_scales(x, sizes).astype(np.float64), sizes)
    # Each draw's error is in (-s, s) with variance <= s²/4: 6 standard errors.
    tol = 6 * step / (2 * np.sqrt(draws)) + 1e-6 * np.abs(x)
    assert (np.abs(mean - x) <= tol).all()


def test_rounding_is_stochastic_not_nearest() -> None:
    # 0.3 steps: nearest rounding would always give 0; unbiased gives ~30% ones.
    x = np.array([127.0] + [0.3] * 10_000, dtype=np.float32)
    u = quantize_int8(x, rng=np.random.default_rng(0))
    share = float(np.mean(u.codes[1:] == 1))
    assert 0.27 < share < 0.33
    assert set(np.unique(u.codes[1:])) == {0, 1}


def test_zero_tensor_and_bad_sizes() -> None:
    u = quantize_int8(np.zeros(5, np.float32), sizes=[2, 3], rng=np.random.default_rng(0))
    assert (dequantize_int8(u) == 0).all()
    with pytest.raises(ValueError, match="do not partition"):
        quantize_int8(np.zeros(5, np.float32), sizes=[2, 2], rng=np.random.default_rng(0))


def test_payloads_roundtrip_through_pickle_and_are_compact() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=9610).astype(np.float32)
    sizes = [8192, 128, 1280, 10]
    u = quantize_int8(x, sizes=sizes, rng=rng)
    blob = pickle.dumps(u, protocol=5)
    back = pickle.loads(blob)
    assert np.array_equal(back.codes, u.codes) and np.array_equal(back.scales, u.scales)
    assert back.sizes.tolist() == sizes
    # int8 codes + 4 scales + 4 sizes + a 4-byte header, and a small pickle frame.
    assert 9610 + 36 < len(blob) < 9610 + 36 + 120
    s = sparsify(x, 96)
    blob = pickle.dumps(s, protocol=5)
    back = pickle.loads(blob)
    assert back.indices.dtype == np.uint16
    assert np.array_equal(densify(back), densify(s))
    assert 8 + 96 * 6 < len(blob) < 8 + 96 * 6 + 120


def reference_topk(x: np.ndarray, k: int) -> list[int]:
    # Largest magnitude first, earliest position first among ties.
    order = sorted(range(x.size), key=lambda i: (-abs(float(x[i])), i))
    return sorted(order[:k])


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.integers(1, 100), elements=st.floats(-8, 8, width=32)),
       st.floats(0.001, 1.0))
def test_topk_matches_sorting_reference(x, ratio) -> None:
    k = topk_count(x.size, ratio)
    s = sparsify(x, k)
    assert s.indices.tolist() == reference_topk(x, k)
    assert np.array_equal(s.values, x[s.indices.astype(np.int64)])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 60), st.integers(1, 6), st.integers(1, 10), st.integers(0, 2**31))
def test_error_feedback_loses_nothing(size, k, rounds, seed) -> None:
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(rounds, size)).astype(np.float32)
    residual = None
    sent_total = np.zeros(size, dtype=np.float64)
    for u in updates:
        before = np.zeros(size, np.float32) if residual is None else residual.copy()
        sent, residual = sparsify_with_feedback(u, residual, k=min(k, size))
        # Each round, exactly: sent + new residual == old residual + update.
        assert np.array_equal(densify(sent) + residual, before + u)
        assert np.count_nonzero(residual[sent.indices.astype(np.int64)]) == 0
        sent_total += densify(sent)
    true_total = updates.astype(np.float64).sum(axis=0)
    # Across rounds only float32 additions of acc = residual + update round.
    assert np.allclose(sent_total + residual, true_total, rtol=1e-5, atol=1e-5)


def test_error_feedback_rejects_a_residual_of_another_model() -> None:
    with pytest.raises(ValueError, match="model changed"):
        sparsify_with_feedback(np.ones(4, np.float32), np.ones(3, np.float32), k=1)
