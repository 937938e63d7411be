"""Aggregation strategies: reducers (pure), server optimizers (pure), and ``Strategy``.

See ``reducers.py`` and ``server_opt.py`` for the algorithms and their papers.
"""

from rayfed.strategies.reducers import (
    REDUCERS,
    Reducer,
    coordinate_median,
    krum,
    krum_scores,
    krum_select,
    reduce,
    reducer_param_problems,
    trimmed_mean,
    weighted_mean,
    weighted_sum,
)
from rayfed.strategies.server_opt import (
    SERVER_OPTIMIZERS,
    ServerOptState,
    ServerStep,
    adagrad_step,
    adam_step,
    optimizer_param_problems,
    sgd_step,
    yogi_step,
)
from rayfed.strategies.strategy import STRATEGY_PRESETS, Strategy, build_strategy

__all__ = [
    "REDUCERS",
    "SERVER_OPTIMIZERS",
    "STRATEGY_PRESETS",
    "Reducer",
    "ServerOptState",
    "ServerStep",
    "Strategy",
    "adagrad_step",
    "adam_step",
    "build_strategy",
    "coordinate_median",
    "krum",
    "krum_scores",
    "krum_select",
    "optimizer_param_problems",
    "reduce",
    "reducer_param_problems",
    "sgd_step",
    "trimmed_mean",
    "weighted_mean",
    "weighted_sum",
    "yogi_step",
]
