"""The ledger's ε against published values and monotonicity properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfed.errors import ConfigError
from rayfed.privacy.accounting import DpEvent, Ledger, epsilon, solve_noise_multiplier

DELTA = 1e-5


def test_rdp_reproduces_published_value():
    # Opacus / Abadi et al. 2016 example: σ=1.5, q=0.04, 2,250 steps (60 epochs).
    eps = epsilon([DpEvent(0.04, 1.5, 2250)], delta=DELTA, accountant="rdp")
    assert eps == pytest.approx(7.329, rel=1e-3)


def test_prv_reproduces_published_value():
    eps = epsilon([DpEvent(0.04, 1.5, 2250)], delta=DELTA, accountant="prv")
    assert eps == pytest.approx(6.777, rel=1e-2)


def test_ledger_of_rounds_composes_like_one_event():
    per_round = [DpEvent(0.04, 1.5, 45, server_round=r) for r in range(1, 51)]
    assert epsilon(per_round, delta=DELTA) == pytest.approx(
        epsilon([DpEvent(0.04, 1.5, 2250)], delta=DELTA), rel=1e-12)


def test_empty_ledger_and_zero_rate_spend_nothing():
    assert epsilon([], delta=DELTA) == 0.0
    assert epsilon([DpEvent(0.0, 1.0, 1000)], delta=DELTA) == 0.0


def test_event_validation_collects_every_problem():
    with pytest.raises(ConfigError) as exc:
        DpEvent(1.5, -1.0, -2)
    assert len(exc.value.problems) == 3


def test_solved_sigma_meets_target_tightly():
    sigma = solve_noise_multiplier(target_epsilon=3.0, delta=DELTA, sample_rate=0.01,
                                   steps=1000)
    eps = epsilon([DpEvent(0.01, sigma, 1000)], delta=DELTA)
    assert 2.95 <= eps <= 3.0


def test_ledger_checks_before_spending_and_round_trips():
    led = Ledger(delta=DELTA, target_epsilon=1.0)
    ev = DpEvent(0.05, 3.0, 1)
    spent = 0
    while led.check(ev).allowed:
        led.spend(ev)
        spent += 1
    assert 0 < spent < 200
    assert led.epsilon() <= 1.0 < led.check(ev).epsilon_after
    again = Ledger.from_state(led.state_dict())
    assert again.events == led.events and again.epsilon() == led.epsilon()


rates = st.floats(min_value=1e-3, max_value=0.5)
sigmas = st.floats(min_value=0.6, max_value=5.0)
steps = st.integers(min_value=1, max_value=500)


@settings(max_examples=25, deadline=None)
@given(q=rates, sigma=sigmas, n=steps, extra=st.integers(min_value=1, max_value=500))
def test_epsilon_rises_with_steps(q, sigma, n, extra):
    assert epsilon([DpEvent(q, sigma, n + extra)], delta=DELTA) >= epsilon(
        [DpEvent(q, sigma, n)], delta=DELTA)


@settings(max_examples=25, deadline=None)
@given(q=rates, sigma=sigmas, n=steps, factor=st.floats(min_value=1.05, max_value=1.9))
def test_epsilon_rises_with_sample_rate(q, sigma, n, factor):
    assert epsilon([DpEvent(min(1.0, q * factor), sigma, n)], delta=DELTA) >= epsilon(
        [DpEvent(q, sigma, n)], delta=DELTA)


@settings(max_examples=25, deadline=None)
@given(q=rates, sigma=sigmas, n=steps, factor=st.floats(min_value=1.05, max_value=3.0))
def test_epsilon_falls_as_sigma_rises(q, sigma, n, factor):
    assert epsilon([DpEvent(q, sigma * factor, n)], delta=DELTA) <= epsilon(
        [DpEvent(q, sigma, n)], delta=DELTA)


@settings(max_examples=10, deadline=None)
@given(sigma=sigmas, n=steps)
def test_zero_sample_rate_gives_zero_epsilon(sigma, n):
    assert epsilon([DpEvent(0.0, sigma, n)], delta=DELTA) == 0.0


@settings(max_examples=15, deadline=None)
@given(rows=st.lists(st.tuples(st.floats(min_value=1e-3, max_value=1.0), sigmas, steps),
                     min_size=1, max_size=4))
def test_fast_rdp_path_matches_opacus_accountant(rows):
    # Reference oracle: Opacus's RDPAccountant fed the raw, unmerged history.
    from opacus.accountants import RDPAccountant

    ref = RDPAccountant()
    ref.history = [(sigma, q, n) for q, sigma, n in rows]
    events = [DpEvent(q, sigma, n) for q, sigma, n in rows]
    assert epsilon(events, delta=DELTA) == pytest.approx(ref.get_epsilon(DELTA), rel=1e-9)
