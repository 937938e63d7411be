"""A federated strategy: a reducer and a server optimizer, with the optimizer's state.

The reducer (``reducers.py``) turns the round's deltas into one update Δ; the server
optimizer (``server_opt.py``) applies Δ to the global weights, as in Algorithm 2 of
Reddi et al. 2021, "Adaptive Federated Optimization". The named strategies
(``STRATEGY_PRESETS``) are pairs of the two: FedAvg is the weighted mean with
``x + Δ``, FedAdam the weighted mean with Adam, Krum the Krum rule with ``x + lr Δ``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from rayfed.errors import AggregationError, CheckpointError, ConfigError
from rayfed.strategies.reducers import REDUCERS, reduce, reducer_param_problems
from rayfed.strategies.server_opt import (
    SERVER_OPTIMIZERS,
    ServerOptState,
    optimizer_param_problems,
)

STRATEGY_PRESETS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        # McMahan et al. 2017.
        "fedavg": MappingProxyType({"reducer": "weighted_mean", "server_optimizer": "sgd"}),
        # Li et al. 2020: FedAvg on the server; the proximal term is the participants'.
        "fedprox": MappingProxyType({"reducer": "weighted_mean", "server_optimizer": "sgd"}),
        # Hsu et al. 2019: FedAvg with server momentum (strategy.server_momentum > 0).
        "fedavgm": MappingProxyType({"reducer": "weighted_mean", "server_optimizer": "sgd"}),
        # Reddi et al. 2021.
        "fedadam": MappingProxyType({"reducer": "weighted_mean", "server_optimizer": "adam"}),
        "fedyogi": MappingProxyType({"reducer": "weighted_mean", "server_optimizer": "yogi"}),
        "fedadagrad": MappingProxyType({"reducer": "weighted_mean", "server_optimizer": "adagrad"}),
        # Yin et al. 2018.
        "median": MappingProxyType({"reducer": "median", "server_optimizer": "sgd"}),
        "trimmed_mean": MappingProxyType({"reducer": "trimmed_mean", "server_optimizer": "sgd"}),
        # Blanchard et al. 2017.
        "krum": MappingProxyType({"reducer": "krum", "server_optimizer": "sgd"}),
    }
)


class Strategy:
    """Aggregates a round's deltas into new global weights and keeps the optimizer state.

    ``reducer_params`` and ``optimizer_params`` are the keyword parameters of the
    chosen reducer and server optimizer, e.g. ``{"trim_ratio": 0.1}`` and
    ``{"lr": 1.0, "momentum": 0.9}``. Every problem with them is raised at once, as a
    ``ConfigError``, when the strategy is built.
    """

    def __init__(
        self,
        reducer: str,
        server_optimizer: str,
        *,
        reducer_params: Mapping[str, Any] | None = None,
        optimizer_params: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.reducer_params = dict(reducer_params or {})
        self.optimizer_params = dict(optimizer_params or {})
        problems = _signature_problems(
            "strategy.reducer", reducer, REDUCERS, self.reducer_params
        ) + _signature_problems(
            "strategy.server_optimizer", server_optimizer, SERVER_OPTIMIZERS, self.optimizer_params
        )
        problems += reducer_param_problems(self.reducer_params)
        problems += optimizer_param_problems(self.optimizer_params)
        if problems:
            raise ConfigError(problems)
        self.reducer = reducer
        self.server_optimizer = server_optimizer
        self.name = name if name is not None else f"{reducer}+{server_optimizer}"
        self._state = ServerOptState()

    def aggregate(
        self,
        global_weights: np.ndarray,
        deltas: Sequence[np.ndarray],
        num_examples: Sequence[int],
    ) -> np.ndarray:
        """New global weights from this round's deltas, given in any order."""
        return self.apply(global_weights, self.reduce(deltas, num_examples,
                                                      shape=np.shape(global_weights)))

    def reduce(self, deltas: Sequence[np.ndarray], num_examples: Sequence[int], *,
               shape: tuple[int, ...]) -> np.ndarray:
        """The round's update Δ from its deltas, by the reducer."""
        if len(deltas) != len(num_examples):
            raise AggregationError(
                f"got {len(deltas)} deltas but {len(num_examples)} num_examples; pass one "
                "num_examples per delta"
            )
        if not deltas:
            raise AggregationError(
                "no deltas to aggregate; a round without reports must be aborted before aggregation"
            )
        bad = {i: np.shape(d) for i, d in enumerate(deltas) if np.shape(d) != tuple(shape)}
        if bad:
            raise AggregationError(
                f"every delta must have the global weights' shape {tuple(shape)}; deltas at "
                f"positions {sorted(bad)} have shapes {list(bad.values())}"
            )
        return reduce(
            self.reducer,
            np.stack(deltas),
            np.asarray(num_examples, dtype=np.float64),
            **self.reducer_params,
        )

    @property
    def linear(self) -> bool:
        """Whether the reducer is the weighted mean, so partial sums may be combined.

        Pooled actors then pre-aggregate their participants' updates (as
        pfl-research's workers do) and the server adds the partial sums.
        """
        return self.reducer == "weighted_mean"

    def apply(self, global_weights: np.ndarray, update: np.ndarray) -> np.ndarray:
        """Apply an already-reduced update Δ with the server optimizer."""
        x = np.asarray(global_weights, dtype=np.float32)
        if np.shape(update) != x.shape:
            raise AggregationError(
                f"update has shape {np.shape(update)}, the global weights {x.shape}"
            )
        new_weights, self._state = SERVER_OPTIMIZERS[self.server_optimizer](
            x, np.asarray(update, dtype=np.float32), self._state, **self.optimizer_params
        )
        return new_weights

    def state_dict(self) -> dict[str, Any]:
        """The server optimizer's state as plain, picklable values (copies)."""
        s = self._state
        return {
            "name": self.name,
            "reducer": self.reducer,
            "server_optimizer": self.server_optimizer,
            "step": s.step,
            "m": None if s.m is None else s.m.copy(),
            "v": None if s.v is None else s.v.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state_dict()``; it must come from the same reducer and optimizer."""
        missing = sorted({"reducer", "server_optimizer", "step", "m", "v"} - set(state))
        if missing:
            raise CheckpointError(f"strategy state is missing keys {missing}")
        mine = (self.reducer, self.server_optimizer)
        theirs = (state["reducer"], state["server_optimizer"])
        if theirs != mine:
            raise CheckpointError(
                f"strategy state is for reducer/server_optimizer {theirs}, but this "
                f"strategy uses {mine}; resume with the config that wrote the checkpoint"
            )
        self._state = ServerOptState(
            step=int(state["step"]), m=_frozen_copy(state["m"]), v=_frozen_copy(state["v"])
        )


def build_strategy(
    *,
    name: str,
    reducer: str,
    server_optimizer: str,
    server_lr: float,
    server_momentum: float,
    beta1: float,
    beta2: float,
    tau: float,
    trim_ratio: float,
    num_byzantine: int,
    num_selected: int,
) -> Strategy:
    """A ``Strategy`` from the fields of ``StrategyConfig``.

    Each part gets only the parameters it takes: ``trim_ratio`` goes to the trimmed
    mean only, ``beta2`` to Adam and Yogi but not Adagrad, and so on. ``name`` is a
    label; ``proximal_mu`` is not here because FedProx's term is the participants'.
    """
    reducer_values = {
        "trim_ratio": trim_ratio,
        "num_byzantine": num_byzantine,
        "num_selected": num_selected,
    }
    optimizer_values = {
        "lr": server_lr,
        "momentum": server_momentum,
        "beta1": beta1,
        "beta2": beta2,
        "tau": tau,
    }
    return Strategy(
        reducer,
        server_optimizer,
        reducer_params=_taken_by(REDUCERS.get(reducer), reducer_values),
        optimizer_params=_taken_by(SERVER_OPTIMIZERS.get(server_optimizer), optimizer_values),
        name=name,
    )


def _keyword_only(fn: Callable[..., Any]) -> tuple[set[str], set[str]]:
    """The keyword-only parameters of ``fn``: all of them, and those without default."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    return {p.name for p in params}, {p.name for p in params if p.default is p.empty}


def _taken_by(fn: Callable[..., Any] | None, values: dict[str, Any]) -> dict[str, Any]:
    if fn is None:  # unknown name: Strategy reports it
        return {}
    accepted, _ = _keyword_only(fn)
    return {k: v for k, v in values.items() if k in accepted}


def _signature_problems(
    key: str, choice: str, registry: Mapping[str, Callable[..., Any]], params: Mapping[str, Any]
) -> list[str]:
    if choice not in registry:
        return [f"{key}={choice!r} is not one of {sorted(registry)}; pick one of those"]
    accepted, required = _keyword_only(registry[choice])
    problems = [
        f"{key}={choice!r} takes no parameter {p!r}; it takes {sorted(accepted)}"
        for p in sorted(set(params) - accepted)
    ]
    problems += [
        f"{key}={choice!r} needs the parameter {p!r}" for p in sorted(required - set(params))
    ]
    return problems


def _frozen_copy(a: Any) -> np.ndarray | None:
    if a is None:
        return None
    out = np.array(a, dtype=np.float32)
    out.setflags(write=False)
    return out
