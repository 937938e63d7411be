"""One-shot releases of a vector or a statistic with a stated (ε, δ).

* Laplace mechanism (Dwork, McSherry, Nissim & Smith 2006): noise Lap(b) per
  coordinate with b = Δ₁/ε, for L1 sensitivity Δ₁; gives ε-DP.
* Analytic Gaussian mechanism (Balle & Wang 2018, "Improving the Gaussian
  Mechanism for Differential Privacy", Theorem 8 and Algorithm 1): the smallest σ
  such that N(0, σ²) per coordinate, for L2 sensitivity Δ₂, is (ε, δ)-DP, i.e.

      Φ(Δ₂/(2σ) − εσ/Δ₂) − e^ε · Φ(−Δ₂/(2σ) − εσ/Δ₂) ≤ δ,

  which holds for every ε > 0 (the classical σ = Δ₂·√(2 ln(1.25/δ))/ε needs
  ε < 1 and is looser).

Gaussian noise of scale Δ/ε is the Laplace calibration and gives no (ε, δ)
guarantee for Gaussian noise; use :func:`release_gaussian` instead.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_ndtr

from rayfed.errors import ConfigError


def _check(epsilon: float, delta: float | None, sensitivity: float) -> None:
    problems = []
    if not epsilon > 0:
        problems.append(f"epsilon={epsilon} must be > 0")
    if delta is not None and not 0 < delta < 1:
        problems.append(f"delta={delta} must be in (0, 1)")
    if not sensitivity > 0:
        problems.append(f"sensitivity={sensitivity} must be > 0")
    if problems:
        raise ConfigError(problems)


def gaussian_delta(*, sigma: float, epsilon: float, l2_sensitivity: float) -> float:
    """The exact δ(ε) of the Gaussian mechanism (Balle & Wang 2018, Theorem 8)."""
    a = l2_sensitivity / (2.0 * sigma)
    b = epsilon * sigma / l2_sensitivity
    # In log space: e^ε Φ(−a − b) underflows long before the difference does.
    first = math.exp(log_ndtr(a - b))
    second = math.exp(epsilon + log_ndtr(-a - b))
    return max(0.0, first - second)


def analytic_gaussian_sigma(*, epsilon: float, delta: float, l2_sensitivity: float) -> float:
    """Smallest σ with ``gaussian_delta(σ) ≤ delta`` (to a relative 1e-12)."""
    _check(epsilon, delta, l2_sensitivity)

    def excess(log_sigma: float) -> float:
        return gaussian_delta(sigma=math.exp(log_sigma), epsilon=epsilon,
                              l2_sensitivity=l2_sensitivity) - delta

    # δ(σ) falls monotonically in σ; bracket in log σ and bisect (Algorithm 1's
    # search, done by Brent's method instead of doubling then bisection).
    lo, hi = math.log(l2_sensitivity) - 10.0, math.log(l2_sensitivity) + 10.0
    while excess(lo) < 0:
        lo -= 10.0
    while excess(hi) > 0:
        hi += 10.0
    # Rounded up by a hair so that δ(σ) ≤ delta holds despite the root tolerance.
    return math.exp(brentq(excess, lo, hi, xtol=1e-14, rtol=1e-12)) * (1.0 + 1e-9)


def laplace_scale(*, epsilon: float, l1_sensitivity: float) -> float:
    """b = Δ₁ / ε."""
    _check(epsilon, None, l1_sensitivity)
    return l1_sensitivity / epsilon


def release_gaussian(value: np.ndarray | float, *, epsilon: float, delta: float,
                     l2_sensitivity: float, rng: np.random.Generator) -> np.ndarray:
    """``value`` + N(0, σ²) per coordinate, σ from the analytic Gaussian mechanism."""
    sigma = analytic_gaussian_sigma(epsilon=epsilon, delta=delta, l2_sensitivity=l2_sensitivity)
    arr = np.asarray(value, dtype=np.float64)
    return arr + rng.normal(0.0, sigma, size=arr.shape)


def release_laplace(value: np.ndarray | float, *, epsilon: float, l1_sensitivity: float,
                    rng: np.random.Generator) -> np.ndarray:
    """``value`` + Lap(Δ₁/ε) per coordinate: ε-DP for L1 sensitivity Δ₁."""
    b = laplace_scale(epsilon=epsilon, l1_sensitivity=l1_sensitivity)
    arr = np.asarray(value, dtype=np.float64)
    return arr + rng.laplace(0.0, b, size=arr.shape)
