"""One-shot releases against the published formulas and independent oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from rayfed.errors import ConfigError
from rayfed.privacy.release import (
    analytic_gaussian_sigma,
    gaussian_delta,
    laplace_scale,
    release_gaussian,
    release_laplace,
)


def _delta_by_integration(sigma: float, epsilon: float, sens: float) -> float:
    # Oracle: δ(ε) = E[(1 − e^{ε − L})₊] for the privacy loss L ~ N(μ, 2μ),
    # μ = Δ²/(2σ²) (Balle & Wang 2018, Lemma 3 / Dong et al. 2019), integrated
    # numerically instead of through Φ.
    mu = sens**2 / (2 * sigma**2)
    sd = math.sqrt(2 * mu)

    def integrand(loss: float) -> float:
        return (1 - math.exp(epsilon - loss)) * stats.norm.pdf(loss, mu, sd)

    val, _ = integrate.quad(integrand, epsilon, mu + 40 * sd, epsabs=1e-14, limit=200)
    return val


def test_published_value_eps1_delta1e5():
    # Balle & Wang 2018, Fig. 1 / Table: ε=1, δ=1e-5, Δ=1 → σ ≈ 3.73 (classical 4.84).
    assert analytic_gaussian_sigma(epsilon=1.0, delta=1e-5, l2_sensitivity=1.0) == \
        pytest.approx(3.7306, abs=1e-3)


@settings(max_examples=20, deadline=None)
@given(eps=st.floats(0.1, 10.0), log_delta=st.floats(-10, -3), sens=st.floats(0.1, 10.0))
def test_analytic_sigma_meets_delta_tightly(eps, log_delta, sens):
    delta = 10**log_delta
    sigma = analytic_gaussian_sigma(epsilon=eps, delta=delta, l2_sensitivity=sens)
    assert gaussian_delta(sigma=sigma, epsilon=eps, l2_sensitivity=sens) <= delta
    assert gaussian_delta(sigma=sigma * 0.999, epsilon=eps, l2_sensitivity=sens) > delta
    # Scale invariance: σ is proportional to the sensitivity.
    assert sigma / sens == pytest.approx(
        analytic_gaussian_sigma(epsilon=eps, delta=delta, l2_sensitivity=1.0), rel=1e-6)
    if eps < 1:  # never worse than the classical calibration where that one is valid
        assert sigma <= sens * math.sqrt(2 * math.log(1.25 / delta)) / eps


@pytest.mark.parametrize(("sigma", "eps"), [(1.0, 0.5), (2.0, 1.0), (0.7, 3.0), (5.0, 0.1)])
def test_delta_formula_matches_integrated_privacy_loss(sigma, eps):
    assert gaussian_delta(sigma=sigma, epsilon=eps, l2_sensitivity=1.0) == pytest.approx(
        _delta_by_integration(sigma, eps, 1.0), rel=1e-6, abs=1e-13)


def test_laplace_scale_and_ratio_bound():
    b = laplace_scale(epsilon=0.5, l1_sensitivity=2.0)
    assert b == 4.0
    grid = np.linspace(-30, 30, 601)
    # Neighbouring values 0 and Δ₁=2: log density ratio never exceeds ε.
    log_ratio = stats.laplace.logpdf(grid, 0, b) - stats.laplace.logpdf(grid, 2.0, b)
    assert np.abs(log_ratio).max() == pytest.approx(0.5)
    draws = release_laplace(np.zeros(200_000), epsilon=0.5, l1_sensitivity=2.0,
                            rng=np.random.default_rng(0))
    assert draws.std() == pytest.approx(math.sqrt(2) * b, rel=0.02)


def test_release_gaussian_noise_scale():
    out = release_gaussian(np.full(100_000, 3.0), epsilon=1.0, delta=1e-5, l2_sensitivity=1.0,
                           rng=np.random.default_rng(0))
    assert out.mean() == pytest.approx(3.0, abs=0.05)
    assert out.std() == pytest.approx(3.7306, rel=0.02)


def test_bad_arguments_are_collected():
    with pytest.raises(ConfigError) as exc:
        analytic_gaussian_sigma(epsilon=0.0, delta=2.0, l2_sensitivity=-1.0)
    assert len(exc.value.problems) == 3
