"""Hosts participants inside one process: the body of a Ray actor, without Ray.

A host builds the deterministic partition once, cuts out each participant's shard
on first use, and runs many participants' rounds in one call. A participant that
raises becomes a :class:`~rayfed.types.Failure` value; the others go on.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from rayfed.adversary import Adversary
from rayfed.config import Config, clients_per_round
from rayfed.data.federated import FederatedData
from rayfed.fl.participant import LocalTraining, Participant
from rayfed.fl.rounds import participant_seed
from rayfed.fl.screening import UpdateSpec, rejected, screen
from rayfed.models import build_model, spec_from_config
from rayfed.pipeline import build_pipeline
from rayfed.secure_agg.stage import Enrolling
from rayfed.train import make_optimizer
from rayfed.train.vectorized import train_vectorized, why_not_vectorizable
from rayfed.types import EvalRes, Failure, FitIns, FitRes, PartialAggregate


class InjectedFault(RuntimeError):
    """Raised by ``faults.raise_clients``: chaos testing of the failure path."""


def _too_late(ins: FitIns) -> Failure:
    return Failure(ins.participant_id, ins.server_round, "timeout",
                   "round deadline passed before this participant ran")


def _failed(ins: FitIns, exc: Exception) -> Failure:
    """A participant's exception as a value; the host's other participants go on."""
    return Failure(ins.participant_id, ins.server_round, "error",
                   f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


class ParticipantHost:
    def __init__(self, cfg: Config, materials: Mapping[str, Any] | None = None) -> None:
        torch.set_num_threads(cfg.runtime.torch_threads)
        self._cfg = cfg
        self._data = FederatedData(cfg.dataset, cfg.partition, num_clients=cfg.fl.num_clients,
                                   seed=cfg.seed)
        spec = spec_from_config(cfg.model, input_shape=self._data.input_shape,
                                num_classes=self._data.num_classes)
        self._model = build_model(spec)
        self._training = LocalTraining.from_config(cfg)
        self.pipeline = build_pipeline(cfg)
        # Per-run material for stages, e.g. secure aggregation's public context and
        # the decryptor's key registrar (nothing secret: see rayfed.secure_agg).
        self.pipeline.provision(materials or {})
        # User-level DP (DP-FedAvg) sums clipped updates with weight 1.
        self._unit_weights = cfg.privacy.name == "central_dp"
        self._participants: dict[int, Participant] = {}
        self._record_dp = None
        if cfg.privacy.name == "local_dp":
            from rayfed.privacy.dpsgd import RecordLevelDp

            self._record_dp = RecordLevelDp(cfg, self._model)
        # Plain local SGD: train this host's participants together (torch.func.vmap).
        self._vectorize = (cfg.runtime.vectorize and self._record_dp is None
                           and self._training.ddp is None
                           and why_not_vectorizable(self._training, self._model) is None)
        # Byzantine participants (adversary.*): robustness experiments and tests.
        self._adversary = (Adversary(cfg.adversary, num_clients=cfg.fl.num_clients,
                                     per_round=clients_per_round(cfg.fl),
                                     num_classes=self._data.num_classes)
                           if cfg.adversary.name != "none" or cfg.adversary.malformed
                           else None)
        # The first optimizer a process builds imports torch._dynamo (~1 s); pay it
        # while the actor starts, not inside the first round's deadline.
        make_optimizer(self._model.parameters(), name=self._training.optimizer, lr=1e-3)

    def participant(self, participant_id: int) -> Participant:
        if participant_id not in self._participants:
            data = self._data.client(participant_id)
            if self._adversary is not None:
                data = self._adversary.poison(data)
            self._participants[participant_id] = Participant(
                data, self._model, self._training, self.pipeline, self._record_dp)
        return self._participants[participant_id]

    def _inject_faults(self, participant_id: int, server_round: int) -> None:
        f = self._cfg.faults
        if f.rounds and server_round not in f.rounds:
            return
        if participant_id in f.crash_clients:
            os._exit(1)  # a real process death, as a killed actor would have
        if participant_id in f.raise_clients:
            raise InjectedFault(f"injected fault in participant {participant_id}")
        if participant_id in f.slow_clients:
            time.sleep(f.slow_delay_s)

    def fit(
        self,
        server_round: int,
        global_weights: np.ndarray,
        tasks: Sequence[FitIns],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[FitRes | Failure]:
        if self._vectorize:
            return self._attack(global_weights, self._fit_vectorized(
                server_round, global_weights, tasks, should_stop))
        out: list[FitRes | Failure] = []
        for ins in tasks:
            if should_stop():
                out.append(_too_late(ins))
                continue
            try:
                self._inject_faults(ins.participant_id, server_round)
                out.append(self.participant(ins.participant_id).fit(global_weights, ins))
            except Exception as exc:  # a participant's failure is a value
                out.append(_failed(ins, exc))
        return self._attack(global_weights, out)

    def _attack(self, global_weights: np.ndarray,
                results: list[FitRes | Failure]) -> list[FitRes | Failure]:
        """Malicious participants (adversary.*) replace their honest updates."""
        adv = self._adversary
        if adv is None:
            return results

        def colluders_honest(ids: Sequence[int]) -> list[np.ndarray]:
            # ALIE: the attackers' own honest updates this round, seeded as the
            # server would seed them (sequential path, no carried state).
            rnd = next(r.server_round for r in results if isinstance(r, FitRes))
            return [np.asarray(self.participant(pid).fit(global_weights, FitIns(
                pid, rnd, participant_seed(self._cfg.seed, rnd, pid))).delta)
                for pid in ids]

        return [adv.act(r, colluders_honest=colluders_honest) if isinstance(r, FitRes) else r
                for r in results]

    def _fit_vectorized(
        self,
        server_round: int,
        global_weights: np.ndarray,
        tasks: Sequence[FitIns],
        should_stop: Callable[[], bool],
    ) -> list[FitRes | Failure]:
        """:meth:`fit` for plain SGD: groups of participants train in one vmapped loop.

        The outcome per participant is the sequential path's: the same deltas (to
        float rounding) and faults and failures per participant. A group is the
        unit of work: no group starts after the deadline, and a group that started
        finishes (as a participant does on the sequential path).
        """
        out: dict[int, FitRes | Failure] = {}
        # A copy: the broadcast array is a read-only view of the object store.
        start_weights = torch.tensor(global_weights, dtype=torch.float32)
        group_size = self._cfg.runtime.vectorize_group
        for start in range(0, len(tasks), group_size):
            if should_stop():
                out.update((ins.participant_id, _too_late(ins))
                           for ins in tasks[start : start + group_size])
                continue
            t0 = time.perf_counter()
            group: list[tuple[FitIns, Participant]] = []
            for ins in tasks[start : start + group_size]:
                try:
                    self._inject_faults(ins.participant_id, server_round)
                    group.append((ins, self.participant(ins.participant_id)))
                except Exception as exc:  # a participant's failure is a value
                    out[ins.participant_id] = _failed(ins, exc)
            if not group:
                continue
            try:
                trained = train_vectorized(
                    self._model, start_weights,
                    [(p.data.x_train, p.data.y_train) for _, p in group],
                    [ins.seed for ins, _ in group], self._training, max_group=group_size)
            except Exception as exc:
                out.update((ins.participant_id, _failed(ins, exc)) for ins, _ in group)
                continue
            share = (time.perf_counter() - t0) / len(group)
            for (ins, participant), local in zip(group, trained, strict=True):
                try:
                    out[ins.participant_id] = participant.report(
                        ins, local.delta.numpy(), state=participant.carried_state(ins),
                        train_loss=local.loss, fit_seconds=share)
                except Exception as exc:
                    out[ins.participant_id] = _failed(ins, exc)
        return [out[ins.participant_id] for ins in tasks]

    def fit_partial(
        self,
        server_round: int,
        global_weights: np.ndarray,
        tasks: Sequence[FitIns],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[PartialAggregate | Failure]:
        """Like :meth:`fit`, but sum the valid updates here (weighted mean only)."""
        total = np.zeros(global_weights.shape, dtype=np.float64)
        ids: list[int] = []
        counts: list[int] = []
        payload = 0
        loss_sum = 0.0
        states: dict[int, bytes] = {}
        max_metrics: dict[str, float] = {}
        failures: list[PartialAggregate | Failure] = []
        decoded: list[FitRes | Failure] = []
        sent: dict[int, int] = {}  # payload bytes per participant, refused or not
        for res in self.fit(server_round, global_weights, tasks, should_stop):
            if isinstance(res, FitRes):
                sent[res.participant_id] = res.payload_bytes
            # Simulation shortcut: decode here instead of at the server. The bytes
            # counted are still those of the encoded payload.
            try:
                decoded.append(res if isinstance(res, Failure)
                               else replace(res, delta=self.pipeline.decode(res.delta)))
            except Exception as exc:
                decoded.append(rejected(res.participant_id, server_round,
                                        f"undecodable: {type(exc).__name__}: {exc}"))
        # The server's screening, before anything enters the sum (issue #9, I2).
        spec = UpdateSpec(num_params=global_weights.size, shard_sizes={
            r.participant_id: len(self.participant(r.participant_id).data.x_train)
            for r in decoded if isinstance(r, FitRes)})
        for r in screen(decoded, server_round=server_round, spec=spec):
            if isinstance(r, Failure):  # a refused update was still uploaded
                failures.append(replace(r, payload_bytes=sent.get(r.participant_id, 0)))
            elif isinstance(r, FitRes):
                total += (1.0 if self._unit_weights else np.float64(r.num_examples)) * r.delta
                ids.append(r.participant_id)
                counts.append(r.num_examples)
                payload += r.payload_bytes
                loss_sum += r.metrics.get("train_loss", 0.0) * r.num_examples
                if r.state is not None:
                    states[r.participant_id] = r.state
                for k, v in r.metrics.items():
                    max_metrics[k] = max(v, max_metrics.get(k, v))
        if not ids:
            return failures
        partial = PartialAggregate(server_round, tuple(ids), tuple(counts), total, payload,
                                   loss_sum, states, max_metrics)
        return [partial, *failures]

    def evaluate(
        self, server_round: int, global_weights: np.ndarray, participant_ids: Sequence[int]
    ) -> list[EvalRes | Failure]:
        out: list[EvalRes | Failure] = []
        for pid in participant_ids:
            try:
                out.append(self.participant(pid).evaluate(global_weights, server_round))
            except Exception as exc:
                out.append(Failure(pid, server_round, "error", f"{type(exc).__name__}: {exc}"))
        return out

    def enrol(self, participant_ids: Sequence[int]) -> None:
        """Secure aggregation: make the signing keys of the participants this host
        serves, here, and register their public halves with the decryptor itself
        (once, before round 1; raises if an id was already claimed)."""
        for stage in self.pipeline.stages:
            if isinstance(stage, Enrolling):
                stage.enrol(participant_ids)

    def shard_sizes(self, participant_ids: Sequence[int]) -> list[int]:
        return [len(self.participant(pid).data.x_train) for pid in participant_ids]
