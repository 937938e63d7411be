"""The vectorised RDP and σ search against Opacus, their slow reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as opacus_rdp
from opacus.accountants.utils import get_noise_multiplier

from rayfed.privacy import noise_search, sgm_rdp
from rayfed.privacy.accounting import DpEvent, epsilon, solve_noise_multiplier

DELTA = 1e-5
REL = 1e-9


def _opacus_rdp(q: float, sigma: float) -> np.ndarray:
    return np.asarray(opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1,
                                             orders=RDPAccountant.DEFAULT_ALPHAS), dtype=float)


def _assert_fast_within_bound(q: float, sigma: float, ref: np.ndarray) -> None:
    fast = sgm_rdp.rdp_fast(q=q, noise_multiplier=sigma)
    np.testing.assert_array_equal(np.isinf(fast), np.isinf(ref))
    finite = np.isfinite(ref)
    err = np.abs(fast[finite] - ref[finite])
    assert (err <= sgm_rdp.RDP_REL * np.abs(ref[finite]) + sgm_rdp.RDP_ABS).all(), (q, sigma)


def _assert_same_rdp(q: float, sigma: float) -> None:
    ref = _opacus_rdp(q, sigma)
    _assert_fast_within_bound(q, sigma, ref)
    got = sgm_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    finite = np.isfinite(ref)
    rel = np.abs(got[finite] - ref[finite]) / np.maximum(np.abs(ref[finite]), 1e-300)
    worst = int(rel.argmax())
    assert rel.max() <= REL, (q, sigma, np.asarray(RDPAccountant.DEFAULT_ALPHAS)[finite][worst],
                              got[finite][worst], ref[finite][worst])


def test_default_orders_are_opacus_floats():
    assert list(sgm_rdp.DEFAULT_ALPHAS) == RDPAccountant.DEFAULT_ALPHAS


@pytest.mark.parametrize("q", [1e-4, 0.01, 0.05, 0.3, 0.5, 0.8, 0.99, 1.0])
@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.0, 2.0, 5.0, 20.0])
def test_rdp_matches_opacus_on_grid(q, sigma):
    _assert_same_rdp(q, sigma)


@settings(max_examples=25, deadline=None)
@given(log_q=st.floats(-4.0, -0.005), log_sigma=st.floats(-0.5, 1.5))
def test_rdp_matches_opacus_at_random_points(log_q, log_sigma):
    _assert_same_rdp(10.0**log_q, 10.0**log_sigma)


def test_special_cases_match_opacus():
    orders = [1.5, 2.0, math.inf]
    for q, sigma in [(0.0, 1.0), (0.3, 0.0), (1.0, 2.0), (0.3, 1.0)]:
        ref = np.asarray(opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=3,
                                                orders=orders), dtype=float)
        got = sgm_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=3, orders=orders)
        # (0.3, 1) is no special case: α = ∞ is, and the others are the series.
        np.testing.assert_allclose(got, ref, rtol=REL, atol=0)


def _opacus_sigma(target: float, q: float, steps: int) -> float | str:
    try:
        return float(get_noise_multiplier(target_epsilon=target, target_delta=DELTA,
                                          sample_rate=q, steps=steps, accountant="rdp",
                                          epsilon_tolerance=0.01))
    except ValueError as e:
        return str(e)


def _fast_sigma(target: float, q: float, steps: int) -> float | str:
    try:
        return solve_noise_multiplier(target_epsilon=target, delta=DELTA, sample_rate=q,
                                      steps=steps, accountant="rdp")
    except ValueError as e:
        return str(e)


# Every target ε and step count, each with two of the sample rates (Opacus takes
# up to 2 s per search), plus a budget below what any σ can reach.
SIGMA_CASES = [(eps, q, steps) for k, eps in enumerate([0.5, 1.0, 3.0, 8.0])
               for j, steps in enumerate([1, 24, 228, 5000])
               for q in ([1e-4, 0.05, 0.3, 0.8, 0.99, 1.0][(k + j) % 6],
                         [0.16, 0.053, 0.4, 0.01][(k + 2 * j) % 4])]


@pytest.mark.parametrize(("target", "q", "steps"), SIGMA_CASES)
def test_sigma_equals_opacus(target, q, steps):
    assert _fast_sigma(target, q, steps) == _opacus_sigma(target, q, steps)


def test_budget_too_low_raises_like_opacus():
    # No σ brings ε below ~0.1 at δ = 1e-5 with orders ≤ 63: both searches give up.
    assert _opacus_sigma(0.05, 0.3, 24) == "The privacy budget is too low."
    with pytest.raises(ValueError, match="The privacy budget is too low"):
        solve_noise_multiplier(target_epsilon=0.05, delta=DELTA, sample_rate=0.3, steps=24)


def test_screened_epsilon_falls_back_to_opacus_when_too_close_to_call():
    kw = {"noise_multiplier": 1.2, "sample_rate": 0.16, "steps": 84, "delta": DELTA}
    fast, bound = noise_search._epsilon_with_bound(**kw)
    opacus_acc = RDPAccountant()
    opacus_acc.history = [(1.2, 0.16, 84)]
    exact = opacus_acc.get_epsilon(delta=DELTA)
    assert 0 < abs(fast - exact) <= bound
    assert noise_search._decided_epsilon([fast], **kw) == exact
    assert noise_search._decided_epsilon([fast + 1.0], **kw) == fast


def test_ledger_epsilon_equals_rdp_accountant():
    events = [DpEvent(0.8, 2.58, 24), DpEvent(0.053, 0.875, 228), DpEvent(0.8, 2.58, 6),
              DpEvent(1e-3, 1.1, 5000), DpEvent(1.0, 4.0, 3), DpEvent(0.4, 1.77, 36)]
    acc = RDPAccountant()
    for e in events:
        for _ in range(e.steps):
            acc.step(noise_multiplier=e.noise_multiplier, sample_rate=e.sample_rate)
    assert epsilon(events, delta=DELTA, accountant="rdp") == pytest.approx(
        acc.get_epsilon(delta=DELTA), rel=1e-12)
