"""The server's round loop, in the order of Algorithm 1 of FedAvg.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data": each round selects participants, broadcasts the global
weights, lets them train locally, collects their updates under a deadline and a
quorum, aggregates, evaluates, tracks and checkpoints.
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

from rayfed.config import Config, check, clients_per_round, config_hash
from rayfed.data.federated import load_test_split
from rayfed.errors import CheckpointError
from rayfed.fl.checkpoint import CheckpointDir
from rayfed.fl.placement import Pending, Placement, start_ray
from rayfed.fl.rounds import decide, num_participants, participant_seed, select_participants
from rayfed.fl.screening import UpdateSpec, screen
from rayfed.models import build_model, get_flat, set_flat, spec_from_config
from rayfed.pipeline import build_pipeline
from rayfed.privacy.server import BUDGET_EXHAUSTED, ServerPrivacy
from rayfed.strategies import build_strategy
from rayfed.tracking import NullTracker, Tracker
from rayfed.train import evaluate
from rayfed.types import (
    EvalRes,
    Failure,
    FailureKind,
    FitIns,
    FitRes,
    PartialAggregate,
    RoundResult,
)

log = logging.getLogger(__name__)


def _fetch(p: Pending) -> list[Any]:
    """Resolve one call; a dead actor or a failed host becomes Failure values."""
    kind: FailureKind
    try:
        return list(ray.get(p.ref))
    except ray.exceptions.RayActorError as exc:
        kind, reason = "crash", f"participant actor died: {str(exc).splitlines()[0]}"
    except ray.exceptions.RayTaskError as exc:
        kind, reason = "error", f"participant host failed: {str(exc).splitlines()[0]}"
    return [Failure(pid, p.server_round, kind, reason) for pid in p.participant_ids]


class Orchestrator:
    """Runs one federated experiment. Iterate :meth:`rounds`, then :meth:`summary`."""

    def __init__(self, cfg: Config, *, tracker: Tracker | None = None) -> None:
        self.cfg = check(cfg)
        self.tracker: Tracker = tracker or NullTracker()
        self._t_start = time.perf_counter()
        self._t_first_round: float | None = None

        test = load_test_split(cfg.dataset)
        self._x_test, self._y_test = torch.from_numpy(test.x), torch.from_numpy(test.y)
        spec = spec_from_config(cfg.model, input_shape=test.input_shape,
                                num_classes=test.num_classes)
        self.model = build_model(spec, seed=cfg.seed)
        self.weights = get_flat(self.model)
        st = cfg.strategy
        self.strategy = build_strategy(
            name=st.name, reducer=st.reducer, server_optimizer=st.server_optimizer,
            server_lr=st.server_lr, server_momentum=st.server_momentum, beta1=st.beta1,
            beta2=st.beta2, tau=st.tau, trim_ratio=st.trim_ratio,
            num_byzantine=st.num_byzantine, num_selected=st.num_selected)
        self.rng = np.random.default_rng([cfg.seed, 0x5E1EC7])
        self.next_round = 1
        self.history: list[RoundResult] = []
        self.client_states: dict[int, bytes] = {}
        self._stale: list[Pending] = []
        self._aggregate_locally = (cfg.runtime.local_aggregation and self.strategy.linear
                                   and cfg.runtime.placement == "pooled"
                                   # Under secure aggregation hosts send ciphertexts; the
                                   # aggregator sums them (no plaintext partial sums).
                                   and cfg.secure_agg.name == "none")
        self._config_hash = config_hash(cfg)
        self.pipeline = build_pipeline(cfg)
        self.privacy = ServerPrivacy(cfg) if cfg.privacy.name != "none" else None
        self._ckpt: CheckpointDir | None = None
        run_id: str | None = None
        if cfg.checkpoint.enabled:
            run_id = self._setup_checkpoints()

        start_ray(cfg.runtime)
        self.secure_agg = None
        if cfg.secure_agg.name != "none":
            from rayfed.secure_agg.session import SecureAggregation

            # The secret key stays in the decryptor actor; hosts and this process
            # get the public context only.
            self.secure_agg = SecureAggregation(cfg, num_params=self.weights.size)
        self.placement = Placement(
            cfg, materials=self.secure_agg.materials if self.secure_agg else None)
        # The actors build their shards in the background meanwhile.
        self.tracker.start(params=asdict(cfg), run_id=run_id,
                           tags={"rayfed.config_hash": self._config_hash,
                                 "rayfed.placement": cfg.runtime.placement})
        self.placement.wait_ready()
        if self.secure_agg is not None:
            # Hosts register their participants' signing keys with the decryptor
            # themselves; then registration closes, before round 1.
            self.placement.enrol(range(cfg.fl.num_clients))
            self.secure_agg.seal()
        # What a well-formed update looks like; updates are screened against it.
        self.update_spec = UpdateSpec(
            num_params=int(self.weights.size),
            shard_sizes=self.placement.shard_sizes(range(cfg.fl.num_clients)))
        self.setup_seconds = time.perf_counter() - self._t_start

    # -- checkpoints -------------------------------------------------------

    def _setup_checkpoints(self) -> str | None:
        cfg = self.cfg
        root = Path(cfg.checkpoint.dir) / cfg.name
        latest = root / "LATEST"
        if cfg.resume:
            if not latest.is_file():
                raise CheckpointError(f"resume=true but there is no checkpoint under {root}; "
                                      "run once without resume first, or fix checkpoint.dir "
                                      "and name")
            self._ckpt = CheckpointDir(root / latest.read_text().strip(),
                                       keep_last=cfg.checkpoint.keep_last)
            state = self._ckpt.latest()
            if state is None:
                raise CheckpointError(f"resume=true but {self._ckpt.directory} holds no "
                                      "completed round yet; start without resume")
            return self._restore(state)
        # A fresh run never overwrites an earlier run's checkpoints.
        run_dir = time.strftime("%Y%m%d-%H%M%S") + f"-{self._config_hash[:8]}"
        n = 0
        while (root / run_dir).exists():
            n += 1
            run_dir = f"{run_dir.split('.')[0]}.{n}"
        self._ckpt = CheckpointDir(root / run_dir, keep_last=cfg.checkpoint.keep_last)
        root.mkdir(parents=True, exist_ok=True)
        from rayfed.fl.checkpoint import write_atomic

        write_atomic(latest, run_dir.encode())
        return None

    def _state(self) -> dict[str, Any]:
        return {
            "server_round": self.next_round - 1,
            "weights": self.weights,
            "strategy": self.strategy.state_dict(),
            "rng": self.rng.bit_generator.state,
            "client_states": dict(self.client_states),
            "history": list(self.history),
            "config_hash": self._config_hash,
            "mlflow_run_id": self.tracker.run_id,
            "privacy": self.privacy.state_dict() if self.privacy else None,
        }

    def _restore(self, state: dict[str, Any]) -> str | None:
        if state["config_hash"] != self._config_hash:
            raise CheckpointError(
                f"checkpoint in {self._ckpt.directory if self._ckpt else '?'} was written by "
                f"a different config (hash {state['config_hash']} != {self._config_hash}); "
                "resume with the same settings, or start a fresh run with resume=false")
        self.weights = state["weights"]
        self.strategy.load_state_dict(state["strategy"])
        self.rng.bit_generator.state = state["rng"]
        self.client_states = dict(state["client_states"])
        self.history = list(state["history"])
        self.next_round = state["server_round"] + 1
        if self.privacy is not None and state.get("privacy") is not None:
            self.privacy.load_state_dict(state["privacy"])
        log.info("resumed from round %d", state["server_round"])
        run_id: str | None = state["mlflow_run_id"]
        return run_id

    # -- the round loop ----------------------------------------------------

    def rounds(self) -> Iterator[RoundResult]:
        """Run the remaining rounds, yielding each one's result as it ends."""
        while self.next_round <= self.cfg.fl.rounds:
            if self.privacy is not None and not self.privacy.begin_round(self.next_round):
                if self._ckpt:  # the stop itself is saved, so a resume stays stopped
                    self._ckpt.save(self.next_round - 1, self._state())
                return
            result = self.run_round(self.next_round)
            if self.privacy is not None:
                self.privacy.end_round(result.server_round,
                                       released=result.status == "completed")
            self.history.append(result)
            self.next_round += 1
            if self._t_first_round is None:
                self._t_first_round = time.perf_counter() - self._t_start
            self._track(result)
            if self._ckpt and result.server_round % self.cfg.checkpoint.every == 0:
                # Metrics are logged asynchronously: make them durable before the
                # checkpoint says the round is done, or a crash right after it
                # leaves the resumed run's MLflow history without this round.
                self.tracker.flush()
                self._ckpt.save(result.server_round, self._state())
            yield result
            if self.privacy is not None and self.privacy.budget_exhausted:
                return  # record level: every selected participant has spent its budget

    def run_round(self, server_round: int) -> RoundResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        # 1. Select participants.
        def uniform() -> list[int]:
            return select_participants(self.rng, num_clients=cfg.fl.num_clients,
                                       k=clients_per_round(cfg.fl))

        selected = self.privacy.select(self.rng, uniform) if self.privacy else uniform()
        if self.secure_agg is not None:
            self.secure_agg.begin_round(server_round, selected)
        # 2. Broadcast: one copy of the weights in the object store for everyone.
        weights_ref = ray.put(self.weights)
        down = len(pickle.dumps(self.weights, protocol=5)) * len(selected)
        # 3. Local training.
        tasks = [FitIns(pid, server_round, participant_seed(cfg.seed, server_round, pid),
                        self.client_states.get(pid)) for pid in selected]
        self.placement.await_restarts(timeout_s=cfg.fl.round_timeout_s / 2)
        deadline_unix = time.time() + cfg.fl.round_timeout_s
        pending = self.placement.submit_fit(server_round, weights_ref, tasks,
                                            deadline_unix=deadline_unix,
                                            aggregate_locally=self._aggregate_locally)
        # 4. Collect under the deadline; decide on quorum.
        results, num_late = self._collect(pending, server_round)
        # Every payload that reached the server is upload, whatever becomes of it
        # (late, duplicate, undecodable, screened out), and so are the updates a
        # pooled actor received and refused before its partial sum.
        bytes_up = sum(r.payload_bytes for r in results)
        if self.secure_agg is not None:  # ciphertexts are summed, never decoded one by one
            results = [self.secure_agg.screen(r, server_round) for r in results]
        else:
            results = [self._decode(r) for r in results]
        # Malformed, implausible or outsized updates become Failure values here.
        results = screen(results, server_round=server_round, spec=self.update_spec)
        decision = decide(results, server_round=server_round, selected=selected,
                          min_clients=cfg.fl.min_clients)
        failures = tuple(f for f in decision.rejected if f.server_round == server_round)
        for f in failures:
            if f.kind == "rejected":
                log.warning("round %d, participant %d: %s", server_round, f.participant_id,
                            f.reason)
        self.placement.note_crashes([f.participant_id for f in failures if f.kind == "crash"])
        accepted = decision.accepted
        if self.privacy is not None:
            # Updates of an aborted round are discarded, and so is the ε they report.
            self.privacy.observe(accepted if decision.proceed else (), failures)
        aborted = RoundResult(
            server_round=server_round, status="aborted", reason=decision.reason,
            num_selected=len(selected),
            num_reported=sum(num_participants(r) for r in accepted),
            num_failed=len(failures), num_late_rejected=num_late,
            num_rejected=sum(f.kind == "rejected" for f in failures),
            seconds=time.perf_counter() - t0,
            bytes_up=bytes_up, bytes_down=down,
            bytes_up_accepted=sum(r.payload_bytes for r in accepted),
            failures=failures)
        if not decision.proceed:
            log.warning(decision.reason)
            return aborted
        # 5. Aggregate.
        train_loss = self._aggregate(accepted)
        # 6. Evaluate centrally.
        test_loss = test_acc = None
        every = cfg.fl.eval_every
        if server_round == cfg.fl.rounds or (every and server_round % every == 0):
            test_loss, test_acc = self.evaluate()
        fed_acc = None
        fed_every = cfg.fl.federated_eval_every
        if fed_every and server_round % fed_every == 0:
            fed_acc = self._federated_accuracy(selected, server_round)
        return replace(aborted, status="completed", seconds=time.perf_counter() - t0,
                       train_loss=train_loss, test_loss=test_loss, test_accuracy=test_acc,
                       federated_accuracy=fed_acc)

    def _federated_accuracy(self, participant_ids: list[int], server_round: int) -> float | None:
        """Accuracy of the new global model on the participants' own validation
        splits, weighted by their sizes (federated evaluation)."""
        ref = ray.put(self.weights)
        results: list[EvalRes] = []
        for p in self.placement.submit_evaluate(server_round, ref, participant_ids):
            results.extend(r for r in _fetch(p) if isinstance(r, EvalRes) and r.num_examples)
        n = sum(r.num_examples for r in results)
        return sum(r.accuracy * r.num_examples for r in results) / n if n else None

    def _decode(self, r: FitRes | PartialAggregate | Failure) -> Any:
        """Invert the participants' wire stages (e.g. dequantize) for one update."""
        if isinstance(r, FitRes) and self.pipeline.stages:
            try:
                return replace(r, delta=self.pipeline.decode(r.delta))
            except Exception as exc:  # a malformed payload is that participant's failure
                return Failure(r.participant_id, r.server_round, "error",
                               f"undecodable update: {type(exc).__name__}: {exc}")
        return r

    def _aggregate(self, accepted: tuple[FitRes | PartialAggregate, ...]) -> float:
        """Update the global weights; return the participants' mean train loss."""
        fits = [r for r in accepted if isinstance(r, FitRes)]
        partials = [r for r in accepted if isinstance(r, PartialAggregate)]
        if self.secure_agg is not None:
            # Σ w_i Δ_i summed encrypted and opened by the decryptor; the denominator
            # counts only the participants whose ciphertexts were summed.
            summed, weight = self.secure_agg.aggregate(fits)
            if self.privacy is not None and self.privacy.unit_weights:
                update = self.privacy.release(summed)  # DP-FedAvg's fixed denominator
            else:
                update = summed / weight
            self.weights = self.strategy.apply(self.weights, update.astype(np.float32))
        elif self.privacy is not None and self.privacy.unit_weights:
            # DP-FedAvg: Σ clip(Δ_i) (weight 1; partial sums are built the same way),
            # noised and divided by the expected, not the actual, participant count.
            total = np.asarray(np.sum([p.weighted_sum for p in partials]
                                      + [r.delta for r in fits], axis=0, dtype=np.float64))
            self.weights = self.strategy.apply(self.weights, self.privacy.release(total))
        elif not partials:
            self.weights = self.strategy.aggregate(self.weights, [r.delta for r in fits],
                                                   [r.num_examples for r in fits])
        else:
            # Weighted mean from partial sums: Σ_actors Σ_i n_i Δ_i / Σ n_i.
            total = np.sum([p.weighted_sum for p in partials], axis=0)
            for r in fits:
                total += np.float64(r.num_examples) * r.delta
            n = sum(sum(p.num_examples) for p in partials) + sum(r.num_examples for r in fits)
            self.weights = self.strategy.apply(self.weights, (total / n).astype(np.float32))
        for r in fits:
            if r.state is not None:
                self.client_states[r.participant_id] = r.state
        for p in partials:
            self.client_states.update(p.states)
        n_total = sum(r.num_examples for r in fits) + sum(sum(p.num_examples) for p in partials)
        loss = (sum(r.metrics.get("train_loss", 0.0) * r.num_examples for r in fits)
                + sum(p.train_loss_sum for p in partials))
        return loss / n_total

    def _collect(self, pending: list[Pending],
                 server_round: int) -> tuple[list[FitRes | PartialAggregate | Failure], int]:
        """Wait for this round's calls until the deadline.

        Calls still running at the deadline are kept as stale (hosts start no new
        participant after the deadline); when they finish in a later round their
        updates carry the old round id and ``decide`` rejects them.
        """
        deadline = time.monotonic() + self.cfg.fl.round_timeout_s
        results: list[FitRes | PartialAggregate | Failure] = []
        num_late = 0
        if self._stale:
            ready, _ = ray.wait([p.ref for p in self._stale], num_returns=len(self._stale),
                                timeout=0)
            done = set(ready)
            for p in self._stale:
                if p.ref in done:
                    late = [r for r in _fetch(p) if not isinstance(r, Failure)]
                    num_late += sum(num_participants(r) for r in late)
                    results.extend(late)
            self._stale = [p for p in self._stale if p.ref not in done]
        by_ref = {p.ref: p for p in pending}
        remaining = list(by_ref)
        while remaining:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            ready, remaining = ray.wait(remaining, num_returns=1, timeout=timeout)
            for ref in ready:
                results.extend(_fetch(by_ref[ref]))
        for ref in remaining:
            p = by_ref[ref]
            self._stale.append(p)
            results.extend(Failure(pid, server_round, "timeout",
                                   f"no update within fl.round_timeout_s="
                                   f"{self.cfg.fl.round_timeout_s}")
                           for pid in p.participant_ids)
        return results, num_late

    def evaluate(self) -> tuple[float, float]:
        """Loss and accuracy of the current global model on the held-out test split."""
        set_flat(self.model, self.weights)
        return evaluate(self.model, self._x_test, self._y_test)

    def _track(self, r: RoundResult) -> None:
        metrics: dict[str, float] = {
            "participants_reported": r.num_reported, "participants_failed": r.num_failed,
            "late_rejected": r.num_late_rejected, "updates_rejected": r.num_rejected,
            "round_seconds": r.seconds,
            "bytes_up": r.bytes_up, "bytes_up_accepted": r.bytes_up_accepted,
            "bytes_down": r.bytes_down,
            "round_aborted": float(r.status == "aborted"),
        }
        for name, value in (("train_loss", r.train_loss), ("loss", r.test_loss),
                            ("accuracy", r.test_accuracy),
                            ("federated_accuracy", r.federated_accuracy)):
            if value is not None:
                metrics[name] = value
        if self.privacy is not None:
            metrics.update(self.privacy.metrics())
        if self.secure_agg is not None:
            metrics.update(self.secure_agg.metrics())
        self.tracker.log_metrics(metrics, step=r.server_round)

    # -- results -----------------------------------------------------------

    def summary(self, *, status: str = "FINISHED") -> dict[str, Any]:
        completed = [r for r in self.history if r.status == "completed"]
        evals = [r for r in self.history if r.test_accuracy is not None]
        seconds = [r.seconds for r in self.history]
        if self.privacy is not None and self.privacy.budget_exhausted and status == "FINISHED":
            status = BUDGET_EXHAUSTED
        return {
            **(self.privacy.summary() if self.privacy else {}),
            "status": status,
            "final_accuracy": evals[-1].test_accuracy if evals else None,
            "final_loss": evals[-1].test_loss if evals else None,
            "rounds_completed": len(completed),
            "rounds_aborted": len(self.history) - len(completed),
            "wall_seconds": time.perf_counter() - self._t_start,
            "setup_seconds": self.setup_seconds,
            "time_to_first_round_s": self._t_first_round,
            "mean_round_seconds": float(np.mean(seconds)) if seconds else None,
            "median_round_seconds": float(np.median(seconds[1:] or seconds)) if seconds
            else None,
            "bytes_uploaded": sum(r.bytes_up for r in self.history),
            "bytes_uploaded_accepted": sum(r.bytes_up_accepted for r in self.history),
            "bytes_downloaded": sum(r.bytes_down for r in self.history),
            "mlflow_run_id": self.tracker.run_id,
            "num_params": int(self.weights.size),
            "placement": self.cfg.runtime.placement,
            "num_actors": len(self.placement.actors),
        }

    def close(self) -> None:
        self.placement.shutdown()
        if self.secure_agg is not None:
            self.secure_agg.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_overrides(cfg: Config, **sections: Any) -> Config:
    """A copy of ``cfg`` with some sections replaced (tests and benchmarks)."""
    return replace(cfg, **sections)
