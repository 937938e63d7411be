"""The server's own copy of every participant's record-level ledger (DP-SGD).

Abadi et al. 2016: each participant's local DP-SGD is a run of the sampled
Gaussian mechanism over its own records, so each participant has its own ledger.
The participant keeps one (``rayfed.privacy.dpsgd``); this is the server's, and
it is the one the run reports. It is charged when a participant is *dispatched*,
before its update exists, so rounds that abort, updates that arrive late or are
rejected, and carried states that never come back are all counted: ε in the
summary is an upper bound on what was spent, never an under-count. A participant
whose ledger cannot afford the round is not dispatched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rayfed.errors import CheckpointError
from rayfed.privacy.accounting import DpEvent, Ledger
from rayfed.privacy.plan import RecordLevelSettings, record_level_plan


class RecordLedgers:
    def __init__(self, settings: RecordLevelSettings) -> None:
        self.settings = settings
        self.ledgers: dict[int, Ledger] = {}
        self._epsilon: dict[int, float] = {}

    def _ledger(self, participant_id: int, num_examples: int) -> Ledger:
        if participant_id not in self.ledgers:
            p = record_level_plan(self.settings, num_examples)
            self.ledgers[participant_id] = Ledger(delta=p.delta, accountant=p.accountant,
                                                  target_epsilon=p.target_epsilon)
        return self.ledgers[participant_id]

    def dispatch(self, server_round: int, selected: Sequence[int],
                 shard_sizes: Mapping[int, int]) -> tuple[list[int], dict[int, str]]:
        """Charge every selected participant that can afford this round; return
        those and, for the others, why not."""
        allowed: list[int] = []
        refused: dict[int, str] = {}
        for pid in selected:
            n = shard_sizes[pid]
            p = record_level_plan(self.settings, n)
            ledger = self._ledger(pid, n)
            event = DpEvent(p.sample_rate, p.noise_multiplier, p.steps_per_round,
                            server_round=server_round,
                            charge_id=f"dispatch-r{server_round}-p{pid}")
            verdict = ledger.check(event)
            if not verdict.allowed:
                refused[pid] = (f"participant {pid}: privacy budget exhausted at record level "
                                f"(ε would go from {verdict.epsilon_now:.3f} to "
                                f"{verdict.epsilon_after:.3f}, past privacy.target_epsilon="
                                f"{verdict.target_epsilon}); it is no longer dispatched")
                continue
            ledger.spend(event)
            self._epsilon[pid] = ledger.epsilon()
            allowed.append(pid)
        return allowed, refused

    def worst(self) -> tuple[int, float] | None:
        """The participant that spent the most, and its ε."""
        if not self._epsilon:
            return None
        return max(self._epsilon.items(), key=lambda kv: (kv[1], -kv[0]))

    def metrics(self) -> dict[str, float]:
        worst = self.worst()
        if worst is None:
            return {}
        ledger = self.ledgers[worst[0]]
        last = ledger.events[-1]
        return {"epsilon": worst[1], "delta": ledger.delta,
                "noise_multiplier": last.noise_multiplier,
                "clipping_norm": self.settings.clipping_norm}

    def rows(self) -> list[dict[str, Any]]:
        return [{"participant_id": pid, "epsilon": self._epsilon.get(pid, 0.0),
                 "delta": ledger.delta, "events": ledger.rows()}
                for pid, ledger in sorted(self.ledgers.items())]

    def state_dict(self) -> dict[str, Any]:
        return {str(pid): ledger.state_dict() for pid, ledger in self.ledgers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the checkpoint's ledgers, under this run's budget (the config's
        target, never the checkpoint's)."""
        if not isinstance(state, Mapping):
            raise CheckpointError("the checkpoint's record-level ledgers are missing")
        for key, ledger_state in state.items():
            loaded = Ledger.from_state(ledger_state)
            ledger = Ledger(delta=loaded.delta, accountant=loaded.accountant,
                            target_epsilon=self.settings.target_epsilon, events=loaded.events)
            self.ledgers[int(key)] = ledger
            self._epsilon[int(key)] = ledger.epsilon()
