"""DP-FedAvg's pure parts: clipping, noise on the sum, sampling, the stages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rayfed.config import PrivacyConfig, validate
from rayfed.errors import ConfigError
from rayfed.plan import build_pipeline, resolve
from rayfed.privacy.clipping import NonFiniteUpdateError, clip_update, l2_norm
from rayfed.privacy.noise import client_noise_std, noise_generator
from rayfed.privacy.user_level import noisy_mean, poisson_select
from rayfed.stages import UpdateContext
from tests.conftest import small_config

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@settings(max_examples=100, deadline=None)
@given(update=arrays(np.float32, st.integers(1, 300), elements=finite),
       c=st.floats(min_value=1e-3, max_value=100.0))
def test_clipped_norm_is_at_most_c(update, c):
    clipped = clip_update(update, clipping_norm=c)
    assert l2_norm(clipped) <= c + 1e-6
    if l2_norm(update) <= c:
        np.testing.assert_array_equal(clipped, update)
    else:  # direction kept
        cos = float(np.dot(clipped.astype(np.float64), update.astype(np.float64)))
        assert cos > 0


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 50), where=st.integers(0, 49),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_updates_are_rejected_not_clipped(size, where, bad):
    update = np.ones(size, dtype=np.float32)
    update[where % size] = bad
    with pytest.raises(NonFiniteUpdateError):
        clip_update(update, clipping_norm=1.0)


@pytest.mark.parametrize("placement", ["server", "clients"])
def test_noise_std_on_the_sum_is_sigma_c(placement):
    sigma, c, n = 1.3, 0.7, 8
    rng = noise_generator(secure=False, seed=0)
    dim, draws = 1000, 200
    sums = np.empty((draws, dim))
    for i in range(draws):
        if placement == "server":
            sums[i] = noisy_mean(np.zeros(dim), noise_std=sigma * c, expected_clients=1.0,
                                 rng=rng)
        else:
            std = client_noise_std(noise_multiplier=sigma, clipping_norm=c, expected_clients=n)
            sums[i] = sum(rng.normal(0, std, dim) for _ in range(n))
    assert sums.std() == pytest.approx(sigma * c, rel=0.05)
    assert abs(sums.mean()) < 0.01


def test_fixed_denominator_is_the_expected_count():
    out = noisy_mean(np.full(3, 6.0), noise_std=0.0, expected_clients=4.0,
                     rng=np.random.default_rng(0))
    np.testing.assert_allclose(out, 1.5)


def test_poisson_selection_rate():
    rng = np.random.default_rng(1)
    counts = [len(poisson_select(rng, num_clients=200, sample_rate=0.1)) for _ in range(300)]
    assert np.mean(counts) == pytest.approx(20, rel=0.05)
    assert len(set(counts)) > 5  # the count is random, not fixed


def test_secure_generators_are_not_reproducible():
    a = noise_generator(secure=True).normal(size=4)
    b = noise_generator(secure=True).normal(size=4)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(noise_generator(secure=False, seed=3).normal(size=4),
                                  noise_generator(secure=False, seed=3).normal(size=4))


def test_pipeline_for_client_noise(tmp_path):
    cfg = small_config(tmp_path, privacy=PrivacyConfig(
        name="central_dp", noise_multiplier=1.0, clipping_norm=0.5, delta=1e-3,
        noise_placement="clients"), fl=dict(clients_per_round=4))
    pipe = build_pipeline(resolve(cfg))
    assert pipe.names == ("dp_clip", "dp_noise")
    ctx = UpdateContext(0, 1, 10, rng=np.random.default_rng(0))
    out = pipe.encode(np.zeros(20000, dtype=np.float32), ctx)
    assert out.std() == pytest.approx(1.0 * 0.5 / np.sqrt(4), rel=0.05)


def test_plan_solves_sigma_for_the_target(tmp_path):
    cfg = small_config(tmp_path, privacy=PrivacyConfig(name="central_dp", target_epsilon=3.0),
                       fl=dict(rounds=20, clients_per_round=3))
    plan = _user_plan(cfg)
    assert plan.sample_rate == 0.5 and plan.expected_clients == 3
    assert plan.delta < 1 / 6
    from rayfed.privacy.accounting import DpEvent, epsilon
    eps = epsilon([DpEvent(0.5, plan.noise_multiplier, 20)], delta=plan.delta)
    assert 2.9 <= eps <= 3.0


def test_privacy_problems_are_collected(tmp_path):
    cfg = small_config(tmp_path, privacy=PrivacyConfig(
        name="central_dp", clipping_norm=0.0, delta=0.5, accountant="gdp"),
        strategy=dict(reducer="median"))
    problems = validate(cfg)
    text = "\n".join(problems)
    for key in ("privacy.accountant", "privacy.target_epsilon", "privacy.clipping_norm",
                "privacy.delta", "strategy.reducer"):
        assert key in text
    with pytest.raises(ConfigError):
        _user_plan(small_config(tmp_path, privacy=PrivacyConfig(
            name="central_dp", target_epsilon=1e-4), fl=dict(rounds=100)))


def _user_plan(cfg):
    return resolve(cfg).privacy.user
