"""The server's round loop, in the order of Algorithm 1 of FedAvg.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data": each round selects participants, broadcasts the global
weights, lets them train locally, collects their updates under a deadline and a
quorum, aggregates, accounts, evaluates, tracks and checkpoints.

Everything the loop needs is resolved before it starts (:class:`~rayfed.plan.RunPlan`):
privacy and secure aggregation are objects that do nothing when they are off,
and the aggregation is one object chosen by the plan's mode.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from rayfed.config import Config
from rayfed.errors import ConfigError
from rayfed.fl.aggregation import build_aggregation
from rayfed.fl.checkpoint import RunCheckpoints, load_key
from rayfed.fl.collect import Collector, fetch
from rayfed.fl.placement import ParticipantActors
from rayfed.fl.report import round_metrics, run_summary
from rayfed.fl.rounds import decide, num_participants, participant_seed, select_participants
from rayfed.fl.screening import UpdateSpec
from rayfed.fl.testset import server_test_set
from rayfed.models import get_flat, set_flat
from rayfed.models.config import build
from rayfed.plan import RunPlan, build_pipeline, plan_state, resolve, resume_plan
from rayfed.privacy.plan import shard_problems
from rayfed.privacy.server import BUDGET_EXHAUSTED, build_privacy
from rayfed.runtime import RaySettings, start
from rayfed.strategies.config import strategy_from_config
from rayfed.timing import mark
from rayfed.tracking import NullTracker, Tracker
from rayfed.train import evaluate
from rayfed.types import EvalRes, FitIns, FitRes, PartialAggregate, RoundResult

log = logging.getLogger(__name__)


class Orchestrator:
    """Runs one federated experiment. Iterate :meth:`rounds`, then :meth:`summary`."""

    def __init__(self, plan: RunPlan | Config, *, tracker: Tracker | None = None) -> None:
        self._t_start = time.perf_counter()
        self._t_first_round: float | None = None
        plan = plan if isinstance(plan, RunPlan) else resolve(plan)
        cfg = self.cfg = plan.config
        self.tracker: Tracker = tracker or NullTracker()
        # The server's held-out set; None: federated evaluation only (users' data).
        self._x_test: torch.Tensor | None
        self._y_test: torch.Tensor | None
        self._x_test, self._y_test, shape, num_classes = server_test_set(plan)
        self.input_shape = shape
        self.model = build(cfg.model, input_shape=shape, num_classes=num_classes, seed=cfg.seed,
                           factory=plan.user.model)
        self.weights = get_flat(self.model)
        self.strategy = strategy_from_config(cfg.strategy)
        self.rng = np.random.default_rng([cfg.seed, 0x5E1EC7])
        self.next_round = 1
        self.history: list[RoundResult] = []
        self.client_states: dict[int, bytes] = {}
        self._ckpt: RunCheckpoints | None = None
        state = None
        if cfg.checkpoint.enabled:
            ck = cfg.checkpoint
            self._ckpt, state = RunCheckpoints.open(
                Path(ck.dir) / cfg.name, config=replace(cfg, resume=False, output_dir="."),
                config_hash=plan.config_hash,
                keep_last=ck.keep_last, key=load_key(ck.key_file), resume=cfg.resume)
            plan = replace(plan, run_id=self._ckpt.directory.name)  # a resume is the same run
        if state is not None:
            plan = resume_plan(plan, state)
        self.plan = plan
        self.pipeline = build_pipeline(plan)  # the server's copy decodes (no key in it)
        self.privacy = build_privacy(plan.privacy, seed=cfg.seed)
        run_id = self._restore(state) if state is not None else None
        start(RaySettings.of(cfg.runtime))
        self.aggregation = build_aggregation(plan, self.pipeline, num_params=self.weights.size,
                                             release=self.privacy.release,
                                             strategy=self.strategy)
        # Under secure aggregation, hosts get the public context (the secret key
        # stays in the decryptor actor).
        self.placement = ParticipantActors(plan, materials=self.aggregation.materials)
        mark("actors_created")
        # The actors build their shards in the background meanwhile.
        self.tracker.start(params=asdict(cfg), run_id=run_id,
                           tags={"rayfed.config_hash": plan.config_hash,
                                 "rayfed.placement": cfg.runtime.placement})
        self.placement.wait_ready()
        mark("actors_ready")
        mark("tracker_started")  # it started while the actors booted
        self.aggregation.enrol(self.placement, range(cfg.fl.num_clients))
        if plan.data.source is not None or plan.user.own_data:
            # Every site checks its own data, in its own actor; one error lists all.
            self.placement.check_sites(range(cfg.fl.num_clients), plan.data.input_shape)
        # What a well-formed update looks like; updates are screened against it.
        self.update_spec = UpdateSpec(
            num_params=int(self.weights.size),
            shard_sizes=self.placement.shard_sizes(range(cfg.fl.num_clients)))
        if problems := shard_problems(plan.privacy, dict(self.update_spec.shard_sizes)):
            self.close()
            raise ConfigError(problems)
        self._collector = Collector(timeout_s=cfg.fl.round_timeout_s)
        self.setup_seconds = time.perf_counter() - self._t_start

    @property
    def secure_agg(self) -> Any:
        """The secure-aggregation session, or None (for inspection and tests)."""
        return getattr(self.aggregation, "session", None)

    # -- checkpoints -------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "server_round": self.next_round - 1, "weights": self.weights,
            "strategy": self.strategy.state_dict(), "rng": self.rng.bit_generator.state,
            "client_states": dict(self.client_states), "history": list(self.history),
            "config_hash": self.plan.config_hash, "mlflow_run_id": self.tracker.run_id,
            "privacy": self.privacy.state_dict(), "plan": plan_state(self.plan),
        }

    def _restore(self, state: dict[str, Any]) -> str | None:
        self.weights = state["weights"]
        self.strategy.load_state_dict(state["strategy"])
        self.rng.bit_generator.state = state["rng"]
        self.client_states = dict(state["client_states"])
        self.history = list(state["history"])
        self.next_round = state["server_round"] + 1
        self.privacy.load_state_dict(state["privacy"])
        log.info("resumed from round %d", state["server_round"])
        run_id: str | None = state["mlflow_run_id"]
        return run_id

    # -- the round loop ----------------------------------------------------

    def rounds(self) -> Iterator[RoundResult]:
        """Run the remaining rounds, yielding each one's result as it ends."""
        while self.next_round <= self.cfg.fl.rounds:
            if not self.privacy.begin_round(self.next_round):
                if self._ckpt:  # the stop itself is saved, so a resume stays stopped
                    self._ckpt.save(self.next_round - 1, self._state())
                return
            result = self.run_round(self.next_round)
            self.privacy.end_round(result.server_round, released=result.status == "completed")
            self.history.append(result)
            self.next_round += 1
            if self._t_first_round is None:
                self._t_first_round = time.perf_counter() - self._t_start
            checkpoint = (self._ckpt is not None
                          and result.server_round % self.cfg.checkpoint.every == 0)
            # Stored before the checkpoint says the round is done, or a crash right
            # after it leaves the resumed run's MLflow history without this round.
            self.tracker.log_metrics(round_metrics(result, self.privacy.metrics(),
                                                   self.aggregation.metrics()),
                                     step=result.server_round, durable=checkpoint)
            if self._ckpt and checkpoint:
                self._ckpt.save(result.server_round, self._state())
            yield result
            if self.privacy.budget_exhausted:
                return  # record level: every selected participant has spent its budget

    def run_round(self, server_round: int) -> RoundResult:
        cfg, t0 = self.cfg, time.perf_counter()
        # 1. Select participants.
        selected = self.privacy.select(self.rng, lambda: select_participants(
            self.rng, num_clients=cfg.fl.num_clients, k=self.plan.per_round))
        # Record-level DP charges each participant here, before it computes anything.
        dispatched, refused = self.privacy.dispatch(server_round, selected,
                                                    self.update_spec.shard_sizes)
        self.aggregation.begin_round(server_round, dispatched)
        # 2. Broadcast: one copy of the weights in the object store for everyone.
        weights_ref = ray.put(self.weights)
        down = len(pickle.dumps(self.weights, protocol=5)) * len(dispatched)
        # 3. Local training.
        tasks = [FitIns(pid, server_round, participant_seed(cfg.seed, server_round, pid),
                        self.client_states.get(pid)) for pid in dispatched]
        self.placement.await_restarts(timeout_s=cfg.fl.round_timeout_s / 2)
        pending = self.placement.submit_fit(server_round, weights_ref, tasks,
                                            deadline_unix=time.time() + cfg.fl.round_timeout_s,
                                            aggregate_locally=self.plan.partial_sums)
        # 4. Collect under the deadline; admit (decode, parse, screen); decide on quorum.
        results, num_late = self._collect(pending, server_round)
        results = [*refused, *results]
        # Every payload that reached the server is upload, whatever becomes of it.
        bytes_up = sum(r.payload_bytes for r in results)
        results = self.aggregation.admit(results, server_round=server_round,
                                         spec=self.update_spec)
        decision = decide(results, server_round=server_round, selected=selected,
                          min_clients=cfg.fl.min_clients)
        failures = tuple(f for f in decision.rejected if f.server_round == server_round)
        for f in failures:
            if f.kind == "rejected":
                log.warning("round %d, participant %d: %s", server_round, f.participant_id,
                            f.reason)
        self.placement.note_crashes([f.participant_id for f in failures if f.kind == "crash"])
        accepted = decision.accepted
        # Updates of an aborted round are discarded, and so is the ε they report.
        self.privacy.observe(accepted if decision.proceed else (), failures)
        aborted = RoundResult(
            server_round=server_round, status="aborted", reason=decision.reason,
            num_selected=len(selected), num_reported=sum(num_participants(r) for r in accepted),
            num_failed=len(failures), num_late_rejected=num_late,
            num_rejected=sum(f.kind == "rejected" for f in failures),
            seconds=time.perf_counter() - t0, bytes_up=bytes_up, bytes_down=down,
            bytes_up_accepted=sum(r.payload_bytes for r in accepted), failures=failures)
        if not decision.proceed:
            log.warning(decision.reason)
            return aborted
        # 5. Aggregate (and decode: the aggregation opens or un-noises what it must).
        update = self.aggregation.finish(accepted, num_params=int(self.weights.size))
        self.weights = self.strategy.apply(self.weights, update.astype(np.float32))
        train_loss = self._keep_states(accepted)
        # 6. Evaluate centrally, and on the participants' own validation splits.
        test_loss = test_acc = fed_acc = None
        every, fed_every = cfg.fl.eval_every, cfg.fl.federated_eval_every
        due = server_round == cfg.fl.rounds or bool(every and server_round % every == 0)
        if self._x_test is None:
            # No server test set: the sites' validation splits stand in for it.
            fed_every = fed_every or (1 if due else 0)
        elif due:
            test_loss, test_acc = self.evaluate()
        if fed_every and server_round % fed_every == 0:
            fed_acc = self._federated_accuracy(selected, server_round)
        return replace(aborted, status="completed", seconds=time.perf_counter() - t0,
                       train_loss=train_loss, test_loss=test_loss, test_accuracy=test_acc,
                       federated_accuracy=fed_acc)

    def _collect(self, pending: list[Any], server_round: int) -> tuple[list[Any], int]:
        """What reached the server this round (a seam for recording and tests)."""
        return self._collector.collect(pending, server_round)

    def _keep_states(self, accepted: tuple[FitRes | PartialAggregate, ...]) -> float:
        """Keep the participants' carried states; return their mean train loss."""
        loss = n = 0.0
        for r in accepted:
            if isinstance(r, FitRes):
                if r.state is not None:
                    self.client_states[r.participant_id] = r.state
                loss += r.metrics.get("train_loss", 0.0) * r.num_examples
                n += r.num_examples
            else:
                self.client_states.update(r.states)
                loss += r.train_loss_sum
                n += sum(r.num_examples)
        return loss / n

    def _federated_accuracy(self, participant_ids: list[int], server_round: int) -> float | None:
        """Accuracy of the new global model on the participants' own validation
        splits, weighted by their sizes (federated evaluation)."""
        ref = ray.put(self.weights)
        results: list[EvalRes] = []
        for p in self.placement.submit_evaluate(server_round, ref, participant_ids):
            results.extend(r for r in fetch(p) if isinstance(r, EvalRes) and r.num_examples)
        n = sum(r.num_examples for r in results)
        return sum(r.accuracy * r.num_examples for r in results) / n if n else None

    def evaluate(self) -> tuple[float, float]:
        """Loss and accuracy of the current global model on the held-out test split
        (NaN without one); leaves the global weights in :attr:`model`."""
        set_flat(self.model, self.weights)
        if self._x_test is None or self._y_test is None:
            return float("nan"), float("nan")
        return evaluate(self.model, self._x_test, self._y_test)

    # -- results -----------------------------------------------------------

    def summary(self, *, status: str = "FINISHED") -> dict[str, Any]:
        if self.privacy.budget_exhausted and status == "FINISHED":
            status = BUDGET_EXHAUSTED
        return {**self.privacy.summary(), **run_summary(
            self.history, status=status, wall_seconds=time.perf_counter() - self._t_start,
            setup_seconds=self.setup_seconds, time_to_first_round_s=self._t_first_round),
            "mlflow_run_id": self.tracker.run_id, "num_params": int(self.weights.size),
            "placement": self.cfg.runtime.placement, "num_actors": len(self.placement.actors),
            "evaluation": "server" if self._x_test is not None else "federated",
            "final_federated_accuracy": next((r.federated_accuracy for r in reversed(
                self.history) if r.federated_accuracy is not None), None)}

    def close(self) -> None:
        self.placement.shutdown()
        self.aggregation.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
