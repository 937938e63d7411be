"""The ``strategy`` section of the config: a preset name, its reducer and server optimizer.

The range rules of every parameter live once, next to the math they guard
(``reducers.reducer_param_problems``, ``server_opt.optimizer_param_problems``);
this module only names the section's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayfed.strategies.reducers import REDUCERS, reducer_param_problems
from rayfed.strategies.server_opt import SERVER_OPTIMIZERS, optimizer_param_problems
from rayfed.strategies.strategy import STRATEGY_PRESETS, Strategy, build_strategy


@dataclass
class StrategyConfig:
    name: str = "fedavg"
    reducer: str = "weighted_mean"
    server_optimizer: str = "sgd"
    server_lr: float = 1.0
    server_momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    # FedProx (Li et al. 2020) proximal term, applied by participants.
    proximal_mu: float = 0.0
    trim_ratio: float = 0.1
    num_byzantine: int = 0
    num_selected: int = 1


def _optimizer_values(st: StrategyConfig) -> dict[str, float]:
    return {"lr": st.server_lr, "momentum": st.server_momentum, "beta1": st.beta1,
            "beta2": st.beta2, "tau": st.tau}


def _reducer_values(st: StrategyConfig) -> dict[str, float]:
    return {"trim_ratio": st.trim_ratio, "num_byzantine": st.num_byzantine,
            "num_selected": st.num_selected}


def strategy_problems(st: StrategyConfig) -> list[str]:
    p: list[str] = []
    for key, value, options in (("strategy", st.name, STRATEGY_PRESETS),
                                ("strategy.reducer", st.reducer, REDUCERS),
                                ("strategy.server_optimizer", st.server_optimizer,
                                 SERVER_OPTIMIZERS)):
        if value not in options:
            p.append(f"{key}={value!r} is not one of {sorted(options)}; pick one of those")
    p += optimizer_param_problems(_optimizer_values(st))
    p += reducer_param_problems(_reducer_values(st))
    if not st.proximal_mu >= 0:
        p.append(f"strategy.proximal_mu={st.proximal_mu} must be >= 0")
    return p


def strategy_from_config(st: StrategyConfig) -> Strategy:
    return build_strategy(name=st.name, reducer=st.reducer,
                          server_optimizer=st.server_optimizer, server_lr=st.server_lr,
                          server_momentum=st.server_momentum, beta1=st.beta1, beta2=st.beta2,
                          tau=st.tau, trim_ratio=st.trim_ratio,
                          num_byzantine=st.num_byzantine, num_selected=st.num_selected)
