"""User-level DP-FedAvg at the server (McMahan et al. 2018, Algorithm 1).

Each round: every participant joins independently with probability
q = clients_per_round / num_clients (Poisson sampling, which the sampled
Gaussian mechanism's accounting assumes); the clipped updates are summed,
N(0, σ²C²) is added to the sum (``noise_placement=server``; with ``clients`` the
participants added their shares already), and the sum is divided by the fixed
denominator q·N, the expected number of participants, never by the random count
(which would make the sensitivity data-dependent). Each round is one event
DpEvent(q, σ, 1) in the ledger, checked against the budget before it is spent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rayfed.privacy.accounting import BudgetDecision, DpEvent, Ledger
from rayfed.privacy.noise import gaussian_noise, noise_generator, warn_if_insecure
from rayfed.privacy.plan import UserLevelPlan


def poisson_select(rng: np.random.Generator, *, num_clients: int,
                   sample_rate: float) -> list[int]:
    """Each participant independently with probability ``sample_rate`` (sorted)."""
    return [int(i) for i in np.flatnonzero(rng.random(num_clients) < sample_rate)]


def noisy_mean(clipped_sum: np.ndarray, *, noise_std: float, expected_clients: float,
               rng: np.random.Generator) -> np.ndarray:
    """(Σ clip(Δ_i) + N(0, noise_std²)) / expected_clients, as float32."""
    total = clipped_sum.astype(np.float64)
    if noise_std > 0:
        total = total + gaussian_noise(total.shape, std=noise_std, rng=rng)
    return (total / expected_clients).astype(np.float32)


class UserLevelDp:
    """The server's DP-FedAvg state: the plan, the ledger and the noise generator."""

    def __init__(self, plan: UserLevelPlan, *, seed: int) -> None:
        self.plan = plan
        self.ledger = Ledger(delta=plan.delta, accountant=plan.accountant,
                             target_epsilon=plan.target_epsilon)
        self.rng = noise_generator(secure=plan.secure_rng, seed=[seed, 0xD1F])
        self.budget_exhausted = False
        warn_if_insecure(plan.secure_rng, "privacy=central_dp")

    def select(self, rng: np.random.Generator) -> list[int]:
        return poisson_select(rng, num_clients=self.plan.num_clients,
                              sample_rate=self.plan.sample_rate)

    def event(self, server_round: int) -> DpEvent:
        return DpEvent(self.plan.sample_rate, self.plan.noise_multiplier, 1,
                       server_round=server_round)

    def check(self, server_round: int) -> BudgetDecision:
        """May round ``server_round`` run without taking ε past the target?"""
        return self.ledger.check(self.event(server_round))

    def spend(self, server_round: int) -> None:
        self.ledger.spend(self.event(server_round))

    def release(self, clipped_sum: np.ndarray) -> np.ndarray:
        """The noised DP-FedAvg update from the sum of clipped updates."""
        p = self.plan
        std = p.noise_multiplier * p.clipping_norm if p.noise_placement == "server" else 0.0
        return noisy_mean(clipped_sum, noise_std=std, expected_clients=p.expected_clients,
                          rng=self.rng)

    def epsilon(self) -> float:
        return self.ledger.epsilon()

    def metrics(self) -> dict[str, float]:
        p = self.plan
        return {"epsilon": self.epsilon(), "delta": p.delta,
                "noise_multiplier": p.noise_multiplier, "clipping_norm": p.clipping_norm}

    def state_dict(self) -> dict[str, Any]:
        return {"ledger": self.ledger.state_dict(), "noise_multiplier": self.plan.noise_multiplier,
                "rng": None if self.plan.secure_rng else self.rng.bit_generator.state,
                "budget_exhausted": self.budget_exhausted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The events already spent, under the budget of *this* plan: the target
        # comes from the config on every resume, never from the checkpoint, and
        # σ is the plan's (``rayfed.privacy.plan.replan_user_level`` re-solved it
        # if the resumed run plans other rounds), so noise and ledger agree.
        self.ledger = Ledger(delta=self.plan.delta, accountant=self.plan.accountant,
                             target_epsilon=self.plan.target_epsilon,
                             events=Ledger.from_state(state["ledger"]).events)
        if state["rng"] is not None and not self.plan.secure_rng:
            self.rng.bit_generator.state = state["rng"]
        self.budget_exhausted = bool(state["budget_exhausted"])
