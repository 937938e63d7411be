"""Privacy spending as a ledger of events; ε computed by a library accountant.

Each round (or each participant's local training) appends one frozen
:class:`DpEvent`, the declarative record of a mechanism in the style of Google's
dp-accounting: the sampled Gaussian mechanism with sample rate ``q``, noise
multiplier ``σ`` applied ``steps`` times. ε is never computed by hand here: the
ledger is handed to Opacus's accountants, Rényi DP (Mironov 2017; Mironov,
Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
Mechanism") or the privacy-random-variable accountant (Gopi, Lee & Wutschitz
2021, "Numerical Composition of Differential Privacy").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from rayfed.errors import ConfigError

Accountant = Literal["rdp", "prv"]
Mechanism = Literal["poisson_gaussian"]


@dataclass(frozen=True)
class DpEvent:
    """``steps`` compositions of the Poisson-subsampled Gaussian mechanism."""

    sample_rate: float
    noise_multiplier: float
    steps: int
    mechanism: Mechanism = "poisson_gaussian"
    # Which round spent it (0 = not tied to a round); for the ledger artifact.
    server_round: int = 0
    # One id per run of the mechanism, so that two copies of a ledger (the
    # participant's own and the one it carries through the server) merge without
    # counting an event twice or losing one.
    charge_id: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.sample_rate <= 1.0:
            problems.append(f"sample_rate={self.sample_rate} must be in [0, 1]")
        if not self.noise_multiplier > 0.0:
            problems.append(f"noise_multiplier={self.noise_multiplier} must be > 0")
        if self.steps < 0:
            problems.append(f"steps={self.steps} must be >= 0")
        if problems:
            raise ConfigError([f"DpEvent: {p}" for p in problems])


def _history(events: Iterable[DpEvent]) -> list[tuple[float, float, int]]:
    """Opacus's ``(σ, q, steps)`` history, events with equal (σ, q) merged.

    Composition is commutative, so merging is exact; it keeps the PRV
    accountant's cost independent of the number of rounds.
    """
    merged: dict[tuple[float, float], int] = {}
    for e in events:
        if e.steps > 0 and e.sample_rate > 0:
            key = (e.noise_multiplier, e.sample_rate)
            merged[key] = merged.get(key, 0) + e.steps
    return [(sigma, q, steps) for (sigma, q), steps in merged.items()]


@lru_cache(maxsize=1024)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    # The RDP of one step at Opacus's default orders (Opacus's numbers, computed
    # vectorised by sgm_rdp); RDP composes additively over steps, so a ledger's RDP
    # is Σ steps · this, as RDPAccountant computes it. Imported here: it loads scipy
    # (~0.2 s), which a run without DP should not pay at start-up.
    from rayfed.privacy import sgm_rdp

    return sgm_rdp.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1)


@lru_cache(maxsize=256)
def _prv_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def epsilon(events: Sequence[DpEvent], *, delta: float, accountant: Accountant = "rdp") -> float:
    """ε at ``delta`` of composing every event in the ledger (0 for an empty one)."""
    history = _history(events)
    if not history:
        return 0.0
    if accountant == "prv":
        return _prv_epsilon(tuple(history), delta)
    # Opacus is imported where it is used: importing any part of it loads the whole
    # package (about a second), which a run without DP should not pay at start-up.
    from opacus.accountants.analysis import rdp as rdp_analysis

    from rayfed.privacy import sgm_rdp

    rdp = sum(steps * _rdp_per_step(sigma, q) for sigma, q, steps in history)
    eps, _ = rdp_analysis.get_privacy_spent(orders=list(sgm_rdp.DEFAULT_ALPHAS), rdp=rdp,
                                            delta=delta)
    return float(eps)


def solve_noise_multiplier(*, target_epsilon: float, delta: float, sample_rate: float,
                           steps: int, accountant: Accountant = "rdp") -> float:
    """The smallest σ (to Opacus's tolerance) with ε(σ, q, steps) ≤ ``target_epsilon``.

    Opacus's ``get_noise_multiplier`` search; for "rdp" run on the vectorised
    RDP of :mod:`rayfed.privacy.noise_search` (the same σ, 15-45x sooner).
    """
    if accountant == "rdp":
        from rayfed.privacy import noise_search

        return float(noise_search.solve_noise_multiplier(
            target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=steps,
            epsilon_tolerance=0.01))
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                      sample_rate=sample_rate, steps=steps,
                                      accountant=accountant, epsilon_tolerance=0.01))


@dataclass(frozen=True)
class BudgetDecision:
    """Whether the next event fits the budget, and the ε it would bring."""

    allowed: bool
    epsilon_now: float
    epsilon_after: float
    target_epsilon: float | None


class Ledger:
    """The events spent so far; a thin shell over the pure functions above.

    ``check`` comes before ``spend``: a caller asks whether an event fits the
    budget and only then runs the mechanism and records it.
    """

    def __init__(self, *, delta: float, accountant: Accountant = "rdp",
                 target_epsilon: float | None = None,
                 events: Sequence[DpEvent] = ()) -> None:
        self.delta = delta
        self.accountant: Accountant = accountant
        self.target_epsilon = target_epsilon
        self.events: list[DpEvent] = list(events)

    def epsilon(self) -> float:
        return epsilon(self.events, delta=self.delta, accountant=self.accountant)

    def check(self, event: DpEvent) -> BudgetDecision:
        now = self.epsilon()
        after = epsilon([*self.events, event], delta=self.delta, accountant=self.accountant)
        allowed = self.target_epsilon is None or after <= self.target_epsilon
        return BudgetDecision(allowed, now, after, self.target_epsilon)

    def spend(self, event: DpEvent) -> None:
        self.events.append(event)

    def merge(self, events: Sequence[DpEvent]) -> None:
        """Add the events of another copy of this ledger that this one lacks
        (by ``charge_id``): a copy can add spending, never remove it."""
        known = {e.charge_id for e in self.events if e.charge_id}
        self.events.extend(e for e in events if not e.charge_id or e.charge_id not in known)

    def state_dict(self) -> dict[str, Any]:
        return {"delta": self.delta, "accountant": self.accountant,
                "target_epsilon": self.target_epsilon,
                "events": [asdict(e) for e in self.events]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ledger:
        return cls(delta=state["delta"], accountant=state["accountant"],
                   target_epsilon=state["target_epsilon"],
                   events=[DpEvent(**e) for e in state["events"]])

    def rows(self) -> list[dict[str, Any]]:
        """The ledger as JSON-able rows (the MLflow artifact)."""
        return [asdict(e) for e in self.events]
