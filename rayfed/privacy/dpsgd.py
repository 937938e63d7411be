"""Record-level DP-SGD at a participant, with Opacus's building blocks.

Abadi et al. 2016, "Deep Learning with Differential Privacy": Poisson-sampled
minibatches (each example joins a step with probability q = batch_size / n),
per-sample gradients clipped to ``max_grad_norm`` and Gaussian noise
N(0, σ²·max_grad_norm²) added to their sum. Per-sample gradients come from
Opacus's ``GradSampleModule`` (``privacy.grad_sample_mode``: ``hooks`` or
``functorch``; ``benchmarks/dp_overhead.py`` measures both and ghost clipping),
the clipping and noise from its ``DPOptimizer``. The local loop is still
:func:`rayfed.train.train_epoch`.

Each participant keeps its own :class:`~rayfed.privacy.accounting.Ledger` in its
carried state, so its ε survives rounds, pooled actors serving other
participants in between, and restarts from a checkpoint. σ is solved once, for
the planned ``fl.rounds`` rounds in all of which the participant might train,
and kept in that state. Before a round the ledger is checked: a participant that
would pass ``privacy.target_epsilon`` refuses to train.

FedProx (Li et al. 2020): its proximal gradient μ(w − w_global) depends only on
public weights, so it is added *after* clipping and noise, through
``DPOptimizer``'s step hook; added before, the optimizer would overwrite it from
the per-sample gradients.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from opacus.grad_sample import GradSampleModule, wrap_model
from opacus.optimizers import DPOptimizer
from torch import nn

from rayfed.errors import RayfedError
from rayfed.privacy.accounting import DpEvent, Ledger
from rayfed.privacy.noise import torch_noise_generator, warn_if_insecure
from rayfed.privacy.plan import RecordLevelPlan, RecordLevelSettings, record_level_plan


class BudgetExhaustedError(RayfedError):
    """A participant's next round would take its ε past ``privacy.target_epsilon``."""


def poisson_batches(x: torch.Tensor, y: torch.Tensor, *, sample_rate: float, steps: int,
                    generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches, each holding every example independently with prob. q."""
    for _ in range(steps):
        # Drawn on the (CPU) generator, so a seed samples the same batches on any device.
        mask = (torch.rand(len(x), generator=generator) < sample_rate).to(x.device)
        yield x[mask], y[mask]


class RecordLevelDp:
    """One per host: the wrapped scratch model, the settings, and the host's own
    record of what each of its participants spent.

    A participant's ledger travels in its carried state through the server, but
    the server cannot reset it: the host keeps its own record of every charge
    (and, with ``record_dir``, persists it on its node, so an actor restart keeps
    it too) and merges it with whatever state arrives. A participant whose record
    shows the budget spent refuses to train, whatever it is sent.
    """

    def __init__(self, settings: RecordLevelSettings, model: nn.Module, *,
                 record_dir: Path | None = None) -> None:
        self.settings = settings
        self.secure_rng = settings.secure_rng
        self.model: GradSampleModule = wrap_model(model,
                                                  grad_sample_mode=settings.grad_sample_mode)
        self._record_dir = record_dir
        self._records: dict[int, list[DpEvent]] = {}
        warn_if_insecure(settings.secure_rng, "privacy=local_dp")

    def plan(self, num_examples: int) -> RecordLevelPlan:
        """This participant's plan: σ solved for its own shard size, all rounds."""
        return record_level_plan(self.settings, num_examples)

    def _record(self, participant_id: int) -> list[DpEvent]:
        if participant_id not in self._records:
            events: list[DpEvent] = []
            path = self._record_path(participant_id)
            if path is not None and path.is_file():
                events = [DpEvent(**e) for e in json.loads(path.read_text())]
            self._records[participant_id] = events
        return self._records[participant_id]

    def _record_path(self, participant_id: int) -> Path | None:
        if self._record_dir is None:
            return None
        return self._record_dir / f"participant_{participant_id}.json"

    def admit(self, *, num_examples: int, state: dict[str, Any] | None,
              participant_id: int) -> tuple[RecordLevelPlan, Ledger, DpEvent]:
        """The participant's plan, ledger and this round's event, once the ledger
        has checked the event against the budget (the check before the spend).

        The plan and the budget come from the run's settings, never from the
        carried state; the ledger is the union of the carried events and the
        host's own record. Shared by :meth:`begin` (Opacus) and the vectorised
        path (:mod:`rayfed.privacy.vectorized_dpsgd`), so both charge alike.
        """
        plan = self.plan(num_examples)
        ledger = Ledger(delta=plan.delta, accountant=plan.accountant,
                        target_epsilon=plan.target_epsilon,
                        events=self._record(participant_id))
        carried = (state or {}).get("ledger") if isinstance(state, dict) else None
        if isinstance(carried, dict) and isinstance(carried.get("events"), list):
            ledger.merge([DpEvent(**e) for e in carried["events"]])
        event = DpEvent(plan.sample_rate, plan.noise_multiplier, plan.steps_per_round)
        verdict = ledger.check(event)
        if not verdict.allowed:
            raise BudgetExhaustedError(
                f"participant {participant_id}: privacy budget exhausted (ε would go from "
                f"{verdict.epsilon_now:.3f} to {verdict.epsilon_after:.3f}, past "
                f"privacy.target_epsilon={plan.target_epsilon}); it no longer trains")
        return plan, ledger, event

    def charge(self, participant_id: int, plan: RecordLevelPlan, ledger: Ledger,
               event: DpEvent, *, server_round: int) -> tuple[dict[str, Any], dict[str, float]]:
        """Record that the mechanism ran (in the host's own record first, then the
        carried ledger); return (carried ``record_dp`` state, metrics)."""
        charged = DpEvent(event.sample_rate, event.noise_multiplier, event.steps,
                          server_round=server_round, charge_id=secrets.token_hex(8))
        record = self._record(participant_id)
        record.append(charged)
        path = self._record_path(participant_id)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps([asdict(e) for e in record]))
            os.replace(tmp, path)
        return settle(plan, ledger, charged, server_round=server_round)

    def begin(self, optimizer: torch.optim.Optimizer, *, num_examples: int,
              state: dict[str, Any] | None, seed: int, participant_id: int,
              proximal_mu: float = 0.0,
              anchor: list[torch.Tensor] | None = None) -> RecordLevelSession:
        """Check this round against the participant's budget and wrap the optimizer."""
        plan, ledger, event = self.admit(num_examples=num_examples, state=state,
                                         participant_id=participant_id)
        dp_opt = DPOptimizer(optimizer, noise_multiplier=plan.noise_multiplier,
                             max_grad_norm=plan.max_grad_norm,
                             expected_batch_size=max(1, round(plan.sample_rate * num_examples)),
                             generator=torch_noise_generator(
                                 secure=self.secure_rng, seed=seed,
                                 device=next(self.model.parameters()).device))
        if proximal_mu > 0 and anchor is not None:
            params = [p for p in self.model.parameters() if p.requires_grad]

            def proximal(opt: DPOptimizer) -> None:
                with torch.no_grad():
                    for p, p0 in zip(params, anchor, strict=True):
                        if p.grad is not None:
                            p.grad.add_(p - p0, alpha=proximal_mu)

            dp_opt.attach_step_hook(proximal)
        return RecordLevelSession(self, participant_id, plan, ledger, event, dp_opt)


class RecordLevelSession:
    """One participant's DP-SGD for one round."""

    def __init__(self, dp: RecordLevelDp, participant_id: int, plan: RecordLevelPlan,
                 ledger: Ledger, event: DpEvent, optimizer: DPOptimizer) -> None:
        self.dp = dp
        self.participant_id = participant_id
        self.plan = plan
        self.ledger = ledger
        self.event = event
        self.optimizer = optimizer

    def batches(self, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One local epoch of Poisson-sampled batches."""
        per_epoch = max(1, math.ceil(1.0 / self.plan.sample_rate - 1e-9))
        return poisson_batches(x, y, sample_rate=self.plan.sample_rate, steps=per_epoch,
                               generator=generator)

    def finish(self, server_round: int) -> tuple[dict[str, Any], dict[str, float]]:
        """Record the round's event; return (carried state, metrics to report)."""
        return self.dp.charge(self.participant_id, self.plan, self.ledger, self.event,
                              server_round=server_round)


def settle(plan: RecordLevelPlan, ledger: Ledger, event: DpEvent, *,
           server_round: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Spend ``event`` in ``ledger``; return (carried ``record_dp`` state, metrics)."""
    ledger.spend(DpEvent(event.sample_rate, event.noise_multiplier, event.steps,
                         server_round=server_round, charge_id=event.charge_id))
    state = {"plan": plan.__dict__.copy(), "ledger": ledger.state_dict()}
    metrics = {"epsilon": ledger.epsilon(), "delta": plan.delta,
               "noise_multiplier": plan.noise_multiplier,
               "clipping_norm": plan.max_grad_norm}
    return state, metrics
