"""Hosts participants inside one process: the body of a Ray actor, without Ray.

A host builds the deterministic partition once, cuts out each participant's shard
on first use, and runs many participants' rounds in one call. A participant that
raises becomes a :class:`~rayfed.types.Failure` value; the others go on.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayfed.adversary.adversary import Adversary
from rayfed.data.federated import ClientData, FederatedData
from rayfed.data.schema import SiteSchema
from rayfed.fl.aggregation import PlainAggregation
from rayfed.fl.participant import LocalTraining, Participant
from rayfed.fl.rounds import participant_seed
from rayfed.fl.screening import UpdateSpec
from rayfed.models.config import build
from rayfed.plan import RunPlan, build_pipeline
from rayfed.secure_agg.stage import Enrolling
from rayfed.train import make_optimizer
from rayfed.train.device import device_plan
from rayfed.train.vectorized import train_vectorized, why_not_vectorizable
from rayfed.types import EvalRes, Failure, FitIns, FitRes, PartialAggregate

log = logging.getLogger(__name__)


def ledger_dir(run_id: str) -> Path:
    """Where a node keeps its participants' record-level ledgers for one run."""
    root = Path(tempfile.gettempdir()) / f"rayfed-ledgers-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    return root / run_id


class InjectedFault(RuntimeError):
    """Raised by ``faults.raise_clients``: chaos testing of the failure path."""


def _too_late(ins: FitIns) -> Failure:
    return Failure(ins.participant_id, ins.server_round, "timeout",
                   "round deadline passed before this participant ran")


def _failed(ins: FitIns, exc: Exception) -> Failure:
    """A participant's exception as a value; the host's other participants go on."""
    return Failure(ins.participant_id, ins.server_round, "error",
                   f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


@dataclass
class _Member:
    """One participant of a vectorised group: its task, state and, under
    record-level DP, its admitted (plan, ledger, event)."""

    ins: FitIns
    participant: Participant
    state: dict[str, Any]
    dp: tuple[Any, Any, Any] | None = None


class ParticipantHost:
    """Serves participants from the run's plan; it never re-derives a plan from
    the config (σ, stages and aggregation mode all come resolved)."""

    def __init__(self, plan: RunPlan, materials: Mapping[str, Any] | None = None) -> None:
        cfg = plan.config
        torch.set_num_threads(cfg.runtime.torch_threads)
        self._cfg = cfg
        self._plan = plan
        self._device = device_plan(cfg.participant.device, precision=cfg.participant.precision,
                                   cuda_available=torch.cuda.is_available())
        if self._device.note:
            log.info(self._device.note)
        # Users' data (dataset=files, or rayfed.run's participant_data) is read per
        # participant, on first use, here only; built-in data is partitioned alike
        # in every host.
        self._data: FederatedData | None = None
        if plan.data.source is None and not plan.user.own_data:
            self._data = FederatedData(cfg.dataset, cfg.partition,
                                       num_clients=cfg.fl.num_clients, seed=cfg.seed)
            shape, num_classes = self._data.input_shape, self._data.num_classes
        elif plan.data.input_shape is None or plan.data.num_classes is None:
            raise ValueError("the plan has no input shape for the users' data; "
                             "rayfed.plan.resolve derives it before hosts start")
        else:
            shape, num_classes = plan.data.input_shape, plan.data.num_classes
        self._num_classes = num_classes
        self._model = build(cfg.model, input_shape=shape, num_classes=num_classes,
                            factory=plan.user.model).to(self._device.torch_device)
        self._training = LocalTraining.from_config(cfg, amp=self._device.amp)
        self.pipeline = build_pipeline(plan)
        # Per-run material for stages, e.g. secure aggregation's public context and
        # the decryptor's key registrar (nothing secret: see rayfed.secure_agg).
        self.pipeline.provision(materials or {})
        # Pooled actors sum their participants' admitted updates (linear modes).
        self._aggregation = PlainAggregation(self.pipeline,
                                             unit_weights=plan.privacy.unit_weights)
        self._participants: dict[int, Participant] = {}
        self._record_dp = None
        # Plain local SGD, or DP-SGD with it: train this host's participants together
        # (torch.func.vmap over participants, and over samples for DP-SGD).
        reason = why_not_vectorizable(self._training, self._model)
        self._dp_arch: torch.nn.Module | None = None
        if plan.privacy.record is not None:
            from rayfed.privacy.dpsgd import RecordLevelDp
            from rayfed.privacy.vectorized_dpsgd import why_not_vectorizable_dp

            # The architecture before Opacus wraps (and hooks) the scratch model.
            arch = copy.deepcopy(self._model)
            # Each participant's own record of its spending, kept on this node by run
            # so that neither the server's state nor an actor restart can reset it.
            self._record_dp = RecordLevelDp(plan.privacy.record, self._model,
                                            record_dir=ledger_dir(plan.run_id))
            reason = why_not_vectorizable_dp(self._training, arch)
            if reason is None and self._device.device != "cpu":
                # Its masks and noise are drawn on CPU generators; Opacus runs on the device.
                reason = "vectorised DP-SGD runs on CPU only"
            self._dp_arch = arch if reason is None else None
            if reason is not None and cfg.runtime.vectorize:
                log.info("privacy=local_dp: vectorised DP-SGD does not apply (%s); Opacus "
                         "per participant", reason)
        if reason is None and self._device.autocast_dtype is not None:
            reason = f"participant.precision={cfg.participant.precision} (the loop autocasts)"
        self._vectorize = (cfg.runtime.vectorize and self._training.ddp is None
                           and reason is None)
        # Byzantine participants (adversary.*): robustness experiments and tests.
        self._adversary = (Adversary(cfg.adversary, num_clients=cfg.fl.num_clients,
                                     per_round=plan.per_round,
                                     num_classes=num_classes)
                           if cfg.adversary.active else None)
        # The first optimizer a process builds, like torch.func.grad (per-sample
        # gradients), imports torch._dynamo (~1 s); pay it while the actor starts,
        # not inside the first round's deadline. Vectorised plain SGD needs neither.
        if not self._vectorize or self._record_dp is not None:
            make_optimizer(self._model.parameters(), name=self._training.optimizer, lr=1e-3)

    def _client_data(self, participant_id: int) -> ClientData:
        """This participant's shard: read from its own file or function, or cut from
        the partition; on the participant's device."""
        plan = self._plan
        if plan.data.source is not None:
            from rayfed.data.files import load_site

            data = load_site(plan.data.source, participant_id,
                             val_fraction=self._cfg.dataset.val_fraction, seed=self._cfg.seed)
        elif plan.user.participant_data is not None:
            from rayfed.data.user import client_data

            data = client_data(participant_id, plan.user.participant_data(participant_id))
        elif self._data is not None:
            data = self._data.client(participant_id)
        else:
            raise ValueError(f"participant {participant_id}: this host has no data source")
        dev = self._device.torch_device
        if dev.type == "cpu":
            return data
        return ClientData(participant_id, *(t.to(dev) for t in (
            data.x_train, data.y_train, data.x_val, data.y_val)))

    def describe(self, participant_ids: Sequence[int]) -> list[SiteSchema]:
        """Each participant's own data described (names and shapes, no values), for the
        driver to compare before round 1; ``dataset=files`` reads each site's file."""
        src = self._plan.data.source
        if src is not None:
            from rayfed.data.files import describe_site

            return [describe_site(src, pid) for pid in participant_ids]
        out = []
        for pid in participant_ids:
            try:
                d = self.participant(pid).data
                out.append(SiteSchema(pid, "participant_data", (), tuple(d.x_train.shape[1:]),
                                      (), len(d.x_train)))
            except Exception as exc:  # the user's function can raise anything
                out.append(SiteSchema(pid, "participant_data", (), (), (), 0, (
                    f"participant_data({pid}) raised {type(exc).__name__}: {exc}",)))
        return out

    def participant(self, participant_id: int) -> Participant:
        if participant_id not in self._participants:
            data = self._client_data(participant_id)
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
        start_weights = torch.tensor(global_weights, dtype=torch.float32,
                                     device=self._device.torch_device)
        group_size = self._cfg.runtime.vectorize_group
        for start in range(0, len(tasks), group_size):
            if should_stop():
                out.update((ins.participant_id, _too_late(ins))
                           for ins in tasks[start : start + group_size])
                continue
            t0 = time.perf_counter()
            group: list[_Member] = []
            for ins in tasks[start : start + group_size]:
                try:
                    self._inject_faults(ins.participant_id, server_round)
                    group.append(self._member(ins))  # checks a private budget first
                except Exception as exc:  # a participant's failure is a value
                    out[ins.participant_id] = _failed(ins, exc)
            if not group:
                continue
            try:
                trained = self._train_group(start_weights, group, group_size)
            except Exception as exc:
                out.update((m.ins.participant_id, _failed(m.ins, exc)) for m in group)
                continue
            share = (time.perf_counter() - t0) / len(group)
            for m, (delta, loss) in zip(group, trained, strict=True):
                try:
                    metrics: dict[str, float] = {}
                    if m.dp is not None and self._record_dp is not None:
                        # Charged now: the mechanism ran, whatever becomes of the update.
                        m.state["record_dp"], metrics = self._record_dp.charge(
                            m.ins.participant_id, *m.dp, server_round=m.ins.server_round)
                    out[m.ins.participant_id] = m.participant.report(
                        m.ins, delta, state=m.state, train_loss=loss, fit_seconds=share,
                        metrics=metrics)
                except Exception as exc:
                    out[m.ins.participant_id] = _failed(m.ins, exc)
        return [out[ins.participant_id] for ins in tasks]

    def _member(self, ins: FitIns) -> _Member:
        participant = self.participant(ins.participant_id)
        state = participant.carried_state(ins)
        dp = None
        if self._record_dp is not None:
            dp = self._record_dp.admit(num_examples=len(participant.data.x_train),
                                       state=state.get("record_dp"),
                                       participant_id=ins.participant_id)
        return _Member(ins, participant, state, dp)

    def _train_group(self, start_weights: torch.Tensor, group: list[_Member],
                     group_size: int) -> list[tuple[np.ndarray, float]]:
        shards = [(m.participant.data.x_train, m.participant.data.y_train) for m in group]
        seeds = [m.ins.seed for m in group]
        if self._dp_arch is None:
            trained = train_vectorized(self._model, start_weights, shards, seeds,
                                       self._training, max_group=group_size)
            return [(t.delta.numpy(), t.loss) for t in trained]
        from rayfed.privacy.noise import torch_noise_generator
        from rayfed.privacy.vectorized_dpsgd import train_vectorized_dp

        secure = self._record_dp is not None and self._record_dp.secure_rng
        private = train_vectorized_dp(
            self._dp_arch, start_weights, shards, seeds,
            [torch_noise_generator(secure=secure, seed=s) for s in seeds],
            [m.dp[0] for m in group if m.dp is not None], self._training,
            max_group=group_size)
        return [(t.delta.numpy(), t.loss) for t in private]

    def fit_partial(
        self,
        server_round: int,
        global_weights: np.ndarray,
        tasks: Sequence[FitIns],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[PartialAggregate | Failure]:
        """Like :meth:`fit`, but admit (decode + screen) and sum the updates here.

        The same admission and the same weighted sum as the server's, so a partial
        sum holds exactly what the server would have summed.
        """
        results = self.fit(server_round, global_weights, tasks, should_stop)
        sent = {r.participant_id: r.payload_bytes for r in results if isinstance(r, FitRes)}
        spec = UpdateSpec(num_params=global_weights.size, shard_sizes={
            pid: len(self.participant(pid).data.x_train) for pid in sent})
        admitted = self._aggregation.admit(results, server_round=server_round, spec=spec)
        # A refused update was still uploaded.
        failures: list[PartialAggregate | Failure] = [
            replace(r, payload_bytes=sent.get(r.participant_id, 0))
            for r in admitted if isinstance(r, Failure)]
        fits = [r for r in admitted if isinstance(r, FitRes)]
        if not fits:
            return failures
        return [self._aggregation.partial(fits, server_round=server_round), *failures]

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
