"""Server optimizers: apply the reduced update Δ to the global weights.

Δ (the reducer's output, a mean of ``local - global`` deltas) is used as a
pseudo-gradient pointing *downhill*, so every step moves ``x`` along ``+Δ``.

- ``sgd_step``: ``x + lr * Δ``; with ``momentum > 0`` it is FedAvgM (Hsu et al. 2019,
  "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification"). ``lr = 1, momentum = 0`` is exactly FedAvg: ``x + Δ``.
- ``adam_step``, ``yogi_step``, ``adagrad_step``: FedAdam, FedYogi and FedAdagrad,
  Algorithm 2 of Reddi et al. 2021, "Adaptive Federated Optimization". As in the
  paper, ``m`` starts at 0 and ``v`` at ``τ²`` (the paper asks ``v_{-1} >= τ²``),
  and there is no bias correction.

Steps are pure: they return ``(new_weights, new_state)`` and never modify their
inputs. State arrays are stored read-only, so a ``ServerOptState`` is a true value.
Arithmetic is float32, like the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from rayfed.errors import AggregationError
from rayfed.strategies.checks import is_real as _is_real
from rayfed.strategies.checks import raise_if as _raise_if


# eq=False: the generated __eq__ would compare arrays, whose truth value is ambiguous.
@dataclass(frozen=True, eq=False)
class ServerOptState:
    """A server optimizer's state between rounds. ``ServerOptState()`` is the start."""

    step: int = 0
    # First moment (momentum); None until a step that uses it.
    m: np.ndarray | None = None
    # Second moment of the adaptive optimizers; None until their first step.
    v: np.ndarray | None = None


ServerStep = Callable[..., tuple[np.ndarray, ServerOptState]]


def sgd_step(
    weights: np.ndarray,
    delta: np.ndarray,
    state: ServerOptState,
    *,
    lr: float,
    momentum: float = 0.0,
) -> tuple[np.ndarray, ServerOptState]:
    """``x + lr * Δ``, or FedAvgM with ``m = momentum * m + Δ; x + lr * m``."""
    _raise_if(optimizer_param_problems({"lr": lr, "momentum": momentum}))
    x, g = _as_vectors(weights, delta)
    if momentum == 0:
        return x + np.float32(lr) * g, ServerOptState(step=state.step + 1)
    m = np.float32(momentum) * _moment(state.m, "m", x, 0.0) + g
    new_state = ServerOptState(step=state.step + 1, m=_read_only(m))
    return x + np.float32(lr) * m, new_state


def adam_step(
    weights: np.ndarray,
    delta: np.ndarray,
    state: ServerOptState,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[np.ndarray, ServerOptState]:
    """FedAdam: ``v = β2 v + (1 - β2) Δ²`` (Reddi et al. 2021, Algorithm 2)."""
    _raise_if(optimizer_param_problems({"lr": lr, "beta1": beta1, "beta2": beta2, "tau": tau}))
    b2 = np.float32(beta2)
    return _adaptive_step(
        weights,
        delta,
        state,
        lr=lr,
        beta1=beta1,
        tau=tau,
        second_moment=lambda v, g2: b2 * v + (1 - b2) * g2,
    )


def yogi_step(
    weights: np.ndarray,
    delta: np.ndarray,
    state: ServerOptState,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[np.ndarray, ServerOptState]:
    """FedYogi: ``v = v - (1 - β2) Δ² sign(v - Δ²)`` (Reddi et al. 2021, Algorithm 2).

    Unlike Adam, ``v`` moves by an additive step towards ``Δ²``, so it cannot shrink
    quickly after a burst of large updates.
    """
    _raise_if(optimizer_param_problems({"lr": lr, "beta1": beta1, "beta2": beta2, "tau": tau}))
    b2 = np.float32(beta2)
    return _adaptive_step(
        weights,
        delta,
        state,
        lr=lr,
        beta1=beta1,
        tau=tau,
        second_moment=lambda v, g2: v - (1 - b2) * g2 * np.sign(v - g2),
    )


def adagrad_step(
    weights: np.ndarray,
    delta: np.ndarray,
    state: ServerOptState,
    *,
    lr: float,
    beta1: float,
    tau: float,
) -> tuple[np.ndarray, ServerOptState]:
    """FedAdagrad: ``v = v + Δ²`` (Reddi et al. 2021, Algorithm 2). It has no ``β2``."""
    _raise_if(optimizer_param_problems({"lr": lr, "beta1": beta1, "tau": tau}))
    return _adaptive_step(
        weights, delta, state, lr=lr, beta1=beta1, tau=tau, second_moment=lambda v, g2: v + g2
    )


SERVER_OPTIMIZERS: Mapping[str, ServerStep] = MappingProxyType(
    {"sgd": sgd_step, "adam": adam_step, "yogi": yogi_step, "adagrad": adagrad_step}
)

# The config key behind each hyperparameter, named in error messages.
_CONFIG_KEYS = {
    "lr": "strategy.server_lr",
    "momentum": "strategy.server_momentum",
    "beta1": "strategy.beta1",
    "beta2": "strategy.beta2",
    "tau": "strategy.tau",
}


def optimizer_param_problems(params: Mapping[str, Any]) -> list[str]:
    """Every problem with the values of the hyperparameters present in ``params``."""
    problems = []
    for name, value in params.items():
        key = _CONFIG_KEYS.get(name, name)
        finite = _is_real(value)
        if name in ("lr", "tau") and not (finite and value > 0):
            hint = " (Reddi et al. use 1e-3)" if name == "tau" else ""
            problems.append(f"{key}={value!r} must be a finite number > 0{hint}")
        elif name in ("momentum", "beta1", "beta2") and not (finite and 0 <= value < 1):
            problems.append(f"{key}={value!r} must be a number in [0, 1)")
    return problems


def _adaptive_step(
    weights: np.ndarray,
    delta: np.ndarray,
    state: ServerOptState,
    *,
    lr: float,
    beta1: float,
    tau: float,
    second_moment: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, ServerOptState]:
    """Algorithm 2 of Reddi et al. 2021; the three methods differ only in ``second_moment``."""
    x, g = _as_vectors(weights, delta)
    b1, t = np.float32(beta1), np.float32(tau)
    m = b1 * _moment(state.m, "m", x, 0.0) + (1 - b1) * g
    v = second_moment(_moment(state.v, "v", x, tau * tau), g * g)
    new_x = x + np.float32(lr) * m / (np.sqrt(v) + t)
    return new_x, ServerOptState(step=state.step + 1, m=_read_only(m), v=_read_only(v))


def _moment(value: np.ndarray | None, name: str, x: np.ndarray, initial: float) -> np.ndarray:
    if value is None:
        return np.full_like(x, initial)
    if value.shape != x.shape:
        raise AggregationError(
            f"the server optimizer state's {name} has shape {value.shape} but the weights "
            f"have {x.shape}; it belongs to another model, so start from ServerOptState()"
        )
    return value.astype(np.float32, copy=False)


def _as_vectors(weights: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(weights, dtype=np.float32)
    g = np.asarray(delta, dtype=np.float32)
    if x.ndim != 1 or g.shape != x.shape:
        raise AggregationError(
            f"weights and delta must be flat vectors of the same length, got shapes "
            f"{x.shape} and {g.shape}"
        )
    if not np.isfinite(g).all():
        raise AggregationError(
            "the aggregated delta contains NaN or inf; check the participants' updates"
        )
    return x, g


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
