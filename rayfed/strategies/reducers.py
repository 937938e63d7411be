"""Reducers: rules that combine the participants' update deltas into one vector.

A reducer maps the stacked deltas ``updates`` of shape ``(k, d)`` (one row per
participant) and their ``weights`` (``num_examples``, shape ``(k,)``) to one float32
vector of shape ``(d,)``, which a server optimizer (``server_opt.py``) then applies
to the global weights. Reducers are pure functions with no state.

- ``weighted_mean``: FedAvg, McMahan et al. 2017, "Communication-Efficient Learning
  of Deep Networks from Decentralized Data".
- ``coordinate_median`` and ``trimmed_mean``: Yin et al. 2018, "Byzantine-Robust
  Distributed Learning: Towards Optimal Statistical Rates".
- ``krum``: Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
  Tolerant Gradient Descent"; Multi-Krum (``num_selected > 1``) as in El Mhamdi et
  al. 2018, "The Hidden Vulnerability of Distributed Learning in Byzantium".

Every reducer gives bit-for-bit the same result whatever the order of the
participants. Updates arrive in completion order, and floating-point addition is
not associative, so every sum here runs over values sorted per coordinate (or in
an order fixed by the values themselves), never in arrival order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from rayfed.errors import AggregationError
from rayfed.strategies.checks import is_int as _is_int
from rayfed.strategies.checks import is_real as _is_real
from rayfed.strategies.checks import raise_if as _raise_if

Reducer = Callable[..., np.ndarray]


def weighted_sum(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ w_i · x_i in float64, the same whatever the order of the updates.

    Each coordinate's terms are sorted before they are added, so the result does
    not depend on which participant arrived first, on how pooled actors grouped
    them, or on which machine summed them. The one weighted sum of rayfed: the
    weighted mean, pooled actors' partial sums and DP-FedAvg's clipped sum all
    use it.
    """
    x = np.asarray(updates, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(x),):
        raise AggregationError(f"weighted_sum: {len(x)} updates but weights of shape {w.shape}")
    return np.asarray(np.sum(np.sort(w[:, None] * x, axis=0), axis=0))


def weighted_mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """FedAvg's mean of the updates weighted by ``num_examples`` (McMahan et al. 2017).

    Computed in float64 and cast back to float32.
    """
    x = _as_updates(updates)
    w = _as_weights(weights, len(x))
    if w is None:
        raise AggregationError(
            "weighted_mean needs weights (each participant's num_examples); got None"
        )
    total = np.sum(np.sort(w))
    if total <= 0:
        raise AggregationError(
            "weighted_mean: the weights (num_examples) sum to 0; drop participants that "
            "trained on no examples before aggregating"
        )
    return (weighted_sum(x, w) / total).astype(np.float32)


def coordinate_median(updates: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Coordinate-wise median (Yin et al. 2018). Unweighted: ``weights`` are ignored.

    With an even number of updates, each coordinate is the mean of its two middle values.
    """
    x = _as_updates(updates)
    _as_weights(weights, len(x))
    return np.median(x, axis=0).astype(np.float32)


def trimmed_mean(
    updates: np.ndarray, weights: np.ndarray | None = None, *, trim_ratio: float
) -> np.ndarray:
    """Coordinate-wise trimmed mean (Yin et al. 2018). Unweighted: ``weights`` are ignored.

    Per coordinate, drops the ``floor(trim_ratio * k)`` largest and as many smallest
    values, and averages the rest.
    """
    _raise_if(reducer_param_problems({"trim_ratio": trim_ratio}))
    x = _as_updates(updates)
    _as_weights(weights, len(x))
    k = len(x)
    # The epsilon keeps a ratio written as 0.29 with k = 100 at 29, not 28.999... -> 28;
    # the cap keeps one value per coordinate for ratios a hair below 0.5.
    num_trimmed = min(math.floor(trim_ratio * k + 1e-9), (k - 1) // 2)
    kept = np.sort(x, axis=0)[num_trimmed : k - num_trimmed]
    return np.mean(kept, axis=0).astype(np.float32)


def krum_scores(updates: np.ndarray, *, num_byzantine: int) -> np.ndarray:
    """Krum score of each update (Blanchard et al. 2017), float64 of shape ``(k,)``.

    The score of update i is the sum of its squared distances to its ``k - f - 2``
    nearest other updates, with ``f = num_byzantine``. Lower is more central.
    """
    x = _as_updates(updates)
    _raise_if(_krum_problems(len(x), num_byzantine, 1))
    return _scores(x, num_byzantine)


def krum_select(updates: np.ndarray, *, num_byzantine: int, num_selected: int = 1) -> np.ndarray:
    """Indices of the ``num_selected`` lowest-scored updates, best first.

    Equal scores are broken by the updates' contents, not their positions, so the
    selected *updates* do not depend on the order of the participants.
    """
    x = _as_updates(updates)
    _raise_if(_krum_problems(len(x), num_byzantine, num_selected))
    return _rank(_scores(x, num_byzantine), x)[:num_selected]


def krum(
    updates: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    num_byzantine: int,
    num_selected: int = 1,
) -> np.ndarray:
    """Krum (Blanchard et al. 2017), or Multi-Krum (El Mhamdi et al. 2018).

    Returns the best-scored update, or with ``num_selected > 1`` the unweighted mean
    of the ``num_selected`` best-scored ones. Needs ``k >= 2 * num_byzantine + 3``
    updates and ``num_selected <= k - num_byzantine``. ``weights`` are ignored: a
    Byzantine participant could claim any ``num_examples``.
    """
    x = _as_updates(updates)
    _as_weights(weights, len(x))
    _raise_if(_krum_problems(len(x), num_byzantine, num_selected))
    selected = _rank(_scores(x, num_byzantine), x)[:num_selected]
    return np.mean(x[selected], axis=0).astype(np.float32)


REDUCERS: Mapping[str, Reducer] = MappingProxyType(
    {
        "weighted_mean": weighted_mean,
        "median": coordinate_median,
        "trimmed_mean": trimmed_mean,
        "krum": krum,
    }
)


def reduce(
    name: str, updates: np.ndarray, weights: np.ndarray | None, **params: object
) -> np.ndarray:
    """Run the reducer registered as ``name`` with its keyword parameters ``params``."""
    if name not in REDUCERS:
        raise AggregationError(
            f"unknown reducer {name!r}; set strategy.reducer to one of {sorted(REDUCERS)}"
        )
    return REDUCERS[name](updates, weights, **params)


def reducer_param_problems(params: Mapping[str, Any]) -> list[str]:
    """Every problem with the values of the reducer parameters present in ``params``.

    Checks what can be checked without the updates; ``krum`` checks the number of
    updates when it runs.
    """
    problems = []
    if "trim_ratio" in params:
        r = params["trim_ratio"]
        if not (_is_real(r) and 0 <= r < 0.5):
            problems.append(
                f"strategy.trim_ratio={r!r} must be a number in [0, 0.5), so that trimming "
                "from both ends leaves at least one value per coordinate"
            )
    if "num_byzantine" in params:
        f = params["num_byzantine"]
        if not (_is_int(f) and f >= 0):
            problems.append(f"strategy.num_byzantine={f!r} must be an integer >= 0")
    if "num_selected" in params:
        m = params["num_selected"]
        if not (_is_int(m) and m >= 1):
            problems.append(
                f"strategy.num_selected={m!r} must be an integer >= 1 (1 is plain Krum)"
            )
    return problems


def _krum_problems(n: int, f: int, m: int) -> list[str]:
    problems = reducer_param_problems({"num_byzantine": f, "num_selected": m})
    if problems:
        return problems
    if n < 2 * f + 3:
        fix = (
            f"lower strategy.num_byzantine to at most {(n - 3) // 2} or select more "
            "participants per round"
            if n >= 3
            else "select at least 3 participants per round"
        )
        problems.append(
            f"Krum needs n >= 2 * strategy.num_byzantine + 3 updates, got n={n} with "
            f"strategy.num_byzantine={f} (needs n >= {2 * f + 3}); {fix}"
        )
    elif m > n - f:
        problems.append(
            f"strategy.num_selected={m} must be at most n - strategy.num_byzantine = "
            f"{n - f} (n={n} updates)"
        )
    return problems


def _scores(x: np.ndarray, num_byzantine: int) -> np.ndarray:
    n = len(x)
    dist = _pairwise_sq_distances(x)
    np.fill_diagonal(dist, np.inf)
    nearest = np.sort(dist, axis=1)[:, : n - num_byzantine - 2]
    return np.sum(nearest, axis=1)


def _pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    # Differences rather than |a|^2 + |b|^2 - 2ab: that identity cancels badly for the
    # nearby updates Krum must tell apart, and a BLAS Gram matrix may round an entry
    # differently depending on where its rows sit, which would break order invariance.
    n = len(x)
    dist = np.zeros((n, n))
    for i in range(n - 1):
        diff = x[i + 1 :] - x[i]
        row = np.sum(diff * diff, axis=1)
        dist[i, i + 1 :] = row
        dist[i + 1 :, i] = row
    return dist


def _rank(scores: np.ndarray, x: np.ndarray) -> np.ndarray:
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    if np.any(ranked[1:] == ranked[:-1]):
        # Ties: order by content, so the choice does not depend on participant order.
        order = np.array(
            sorted(range(len(x)), key=lambda i: (scores[i], x[i].tobytes())), dtype=np.intp
        )
    return order


def _as_updates(updates: np.ndarray) -> np.ndarray:
    x = np.asarray(updates, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise AggregationError(
            f"updates must be a non-empty (k, d) array with one row per participant, got "
            f"shape {x.shape}; stack the deltas with np.stack(deltas)"
        )
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise AggregationError(
            f"updates in rows {bad.tolist()} contain NaN or inf; drop those participants' "
            "updates before aggregating"
        )
    return x


def _as_weights(weights: np.ndarray | None, k: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,):
        raise AggregationError(
            f"weights must have shape ({k},), one num_examples per update, got {w.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise AggregationError(
            f"weights (num_examples) must be finite and >= 0; rows {bad.tolist()} are "
            f"{w[bad].tolist()}"
        )
    return w
