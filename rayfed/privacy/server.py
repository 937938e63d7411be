"""What the round loop asks of privacy, in one thin object.

* whom to select (Poisson sampling under user-level DP);
* whether a round may run: the ledger is checked *before* the round spends, and a
  round that would take ε past ``privacy.target_epsilon`` is refused, which
  stops the run with status ``budget_exhausted``;
* the released update: DP-FedAvg's noised, fixed-denominator mean;
* what to track: ε, δ, σ, C per round, the ledger, and at record level the
  largest ε any participant has reported (each participant keeps its own
  accountant in its carried state; see ``rayfed.privacy.dpsgd``).

Its state goes into the server's checkpoint, so a resumed run continues the same
ledger and never resets ε.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rayfed.errors import CheckpointError
from rayfed.privacy.plan import PrivacyPlan
from rayfed.privacy.record_level import RecordLedgers
from rayfed.privacy.user_level import UserLevelDp
from rayfed.types import Failure, FitRes, PartialAggregate

log = logging.getLogger(__name__)

BUDGET_EXHAUSTED = "budget_exhausted"
# The phrase a participant's refusal carries (rayfed.privacy.dpsgd.BudgetExhaustedError).
BUDGET_REFUSAL = "privacy budget exhausted"


class ServerPrivacy:
    """The server's privacy for one run, built from the run's plan."""

    active = True

    def __init__(self, plan: PrivacyPlan, *, seed: int) -> None:
        self.mode = plan.mode
        self.user = UserLevelDp(plan.user, seed=seed) if plan.user is not None else None
        # Record level: the server's own copy of each participant's ledger.
        self.record = RecordLedgers(plan.record) if plan.record is not None else None
        self.budget_exhausted = False
        self.reason = ""

    @property
    def unit_weights(self) -> bool:
        """DP-FedAvg sums clipped updates with weight 1 (its sensitivity is C)."""
        return self.user is not None

    def select(self, rng: np.random.Generator, default: Callable[[], list[int]]) -> list[int]:
        return self.user.select(rng) if self.user is not None else default()

    def begin_round(self, server_round: int) -> bool:
        """Check the budget before the round runs; False = stop the run."""
        if self.user is None:
            return True
        verdict = self.user.check(server_round)
        if not verdict.allowed:
            self.budget_exhausted = True
            self.reason = (f"privacy budget exhausted: round {server_round} would take ε from "
                           f"{verdict.epsilon_now:.4f} to {verdict.epsilon_after:.4f}, past "
                           f"privacy.target_epsilon={verdict.target_epsilon}; stopped before "
                           f"it, the model of round {server_round - 1} is final")
            log.warning(self.reason)
            return False
        return True

    def dispatch(self, server_round: int, selected: Sequence[int],
                 shard_sizes: Mapping[int, int]) -> tuple[list[int], list[Failure]]:
        """Who may train this round. At record level each participant is charged
        here, when its update is about to be computed, whatever becomes of it."""
        if self.record is None:
            return list(selected), []
        allowed, refused = self.record.dispatch(server_round, selected, shard_sizes)
        return allowed, [Failure(pid, server_round, "error", why)
                         for pid, why in refused.items()]

    def end_round(self, server_round: int, *, released: bool) -> None:
        """Charge the round's event to the ledger if its noised sum was released.

        A round aborted on quorum draws no noise and releases no model, so it is
        not charged (docs/privacy.md states what the abort itself reveals).
        """
        if self.user is not None and released:
            self.user.spend(server_round)

    @property
    def release(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """DP-FedAvg's release of a clipped sum (None at record level)."""
        return self.user.release if self.user is not None else None

    def observe(self, results: Sequence[FitRes | PartialAggregate | Failure],
                failures: Sequence[Failure] = ()) -> None:
        """A round in which nobody trained because every selected participant had
        spent its record-level budget ends the run as ``budget_exhausted``."""
        if (self.user is None and failures and not results
                and all(BUDGET_REFUSAL in f.reason for f in failures)):
            self.budget_exhausted = True
            self.reason = (f"privacy budget exhausted: all {len(failures)} participants selected "
                           f"in round {failures[0].server_round} have spent "
                           "privacy.target_epsilon at record level; stopped")
            log.warning(self.reason)

    def metrics(self) -> dict[str, float]:
        if self.user is not None:
            return self.user.metrics()
        return self.record.metrics() if self.record is not None else {}

    def summary(self) -> dict[str, Any]:
        m = self.metrics()
        return {"epsilon": m.get("epsilon"), "delta": m.get("delta"),
                "noise_multiplier": m.get("noise_multiplier"),
                "privacy": self.mode, "privacy_level": "user" if self.user else "record"}

    def ledger_rows(self) -> list[dict[str, Any]]:
        if self.user is not None:
            return self.user.ledger.rows()
        return self.record.rows() if self.record is not None else []

    def state_dict(self) -> dict[str, Any]:
        return {"user": self.user.state_dict() if self.user else None,
                "record": self.record.state_dict() if self.record is not None else None,
                "budget_exhausted": self.budget_exhausted}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue a checkpoint's ledger. A private run's checkpoint without its
        ledger is refused: resuming from it would restart ε at 0."""
        if (not isinstance(state, dict) or (self.user is not None and not state.get("user"))
                or (self.record is not None and state.get("record") is None)):
            raise CheckpointError(
                f"the checkpoint of this privacy={self.mode} run holds no privacy ledger, so "
                "resuming would restart ε at 0; it is refused. Start a fresh run "
                "(resume=false) or restore the run's own checkpoint")
        if self.user is not None:
            self.user.load_state_dict(state["user"])
        if self.record is not None:
            self.record.load_state_dict(state["record"])
        self.budget_exhausted = bool(state["budget_exhausted"])


class NullPrivacy:
    """``privacy=none``: the round loop's privacy calls, doing nothing."""

    active = False
    mode = "none"
    budget_exhausted = False
    reason = ""
    release = None

    def select(self, rng: np.random.Generator, default: Callable[[], list[int]]) -> list[int]:
        return default()

    def begin_round(self, server_round: int) -> bool:
        return True

    def dispatch(self, server_round: int, selected: Sequence[int],
                 shard_sizes: Mapping[int, int]) -> tuple[list[int], list[Failure]]:
        return list(selected), []

    def end_round(self, server_round: int, *, released: bool) -> None:
        pass

    def observe(self, results: Sequence[FitRes | PartialAggregate | Failure],
                failures: Sequence[Failure] = ()) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {}

    def ledger_rows(self) -> list[dict[str, Any]]:
        return []

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        pass


def build_privacy(plan: PrivacyPlan, *, seed: int) -> ServerPrivacy | NullPrivacy:
    return ServerPrivacy(plan, seed=seed) if plan.mode != "none" else NullPrivacy()
