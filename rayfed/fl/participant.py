"""A federated participant: owns its shard, trains locally, reports an update.

This is a plain class with no Ray in it. ``rayfed.fl.placement`` decides whether
it lives in its own actor (cross-silo) or is one of many virtual participants a
pooled actor serves (cross-device simulation); the logic is the same.
"""

from __future__ import annotations

import functools
import io
import pickle
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from rayfed.data.federated import ClientData
from rayfed.fl import safe_format
from rayfed.models import get_flat, set_flat
from rayfed.stages import Pipeline, UpdateContext
from rayfed.train import evaluate, make_optimizer, tensor_batches, train_epoch
from rayfed.train.config import ParticipantConfig
from rayfed.train.loop import Optimization
from rayfed.train.precision import AmpPlan, make_grad_scaler
from rayfed.types import EvalRes, FitIns, FitRes

if TYPE_CHECKING:
    from rayfed.config import Config
    from rayfed.privacy.dpsgd import RecordLevelDp


@dataclass(frozen=True)
class LocalTraining(Optimization):
    """The local half of Algorithm 1 (FedAvg): E epochs of minibatch SGD."""

    # participant.trainer=ddp: the epochs run as a Ray Train DDP job on these workers.
    ddp: ParticipantConfig | None = None
    # participant.precision on the actor's device (rayfed.train.device); None: fp32.
    amp: AmpPlan | None = None

    @classmethod
    def from_config(cls, cfg: Config, *, amp: AmpPlan | None = None) -> LocalTraining:
        return cls(epochs=cfg.fl.local_epochs, batch_size=cfg.fl.batch_size, lr=cfg.fl.lr,
                   optimizer=cfg.fl.optimizer, momentum=cfg.fl.momentum,
                   weight_decay=cfg.fl.weight_decay, proximal_mu=cfg.strategy.proximal_mu,
                   ddp=cfg.participant if cfg.participant.trainer == "ddp" else None,
                   amp=amp if amp is not None and amp.autocast_dtype is not None else None)

    @property
    def stateful(self) -> bool:
        """Whether the local optimizer has state worth carrying between rounds."""
        return self.optimizer != "sgd" or self.momentum > 0


@functools.lru_cache(maxsize=64)
def _array_bytes(shape: tuple[int, ...], dtype: str) -> int:
    return len(pickle.dumps(np.zeros(shape, dtype=np.dtype(dtype)), protocol=5))


def serialized_bytes(payload: object) -> int:
    """Bytes of ``payload`` as it crosses the wire (pickle protocol 5, Ray's format).

    A contiguous array's pickle is a header plus its raw buffer, whatever the
    values, so its size is computed once per shape instead of serialising every
    update again just to count it.
    """
    if isinstance(payload, np.ndarray) and payload.flags.c_contiguous:
        return _array_bytes(payload.shape, payload.dtype.str)
    return len(pickle.dumps(payload, protocol=5))


def _load_state(blob: bytes | None) -> dict[str, Any]:
    """The participant's carried state: optimizer state and per-stage state.

    It travels through the server between rounds, so it is never unpickled: it is
    :mod:`rayfed.fl.safe_format`, and the optimizer's part is read with
    ``torch.load(weights_only=True)``.
    """
    if blob is None:
        return {}
    state = safe_format.loads(blob)
    if not isinstance(state, dict):
        raise safe_format.UnsafeFormatError("carried participant state is not a dict")
    return state


class Participant:
    """One participant. ``model`` is a scratch module the host may share between
    participants: every call loads the global weights into it first."""

    def __init__(self, data: ClientData, model: nn.Module, training: LocalTraining,
                 pipeline: Pipeline | None = None,
                 record_dp: RecordLevelDp | None = None) -> None:
        self.data = data
        self.model = model
        self.training = training
        self.pipeline = pipeline or Pipeline()
        # privacy=local_dp: DP-SGD with this participant's own accountant.
        self.record_dp = record_dp
        # The module is shared and only its tensors' data change, so the parameter
        # list (and a stateless optimizer over it) can be built once.
        self._params = list(model.parameters())
        self._optimizer: torch.optim.Optimizer | None = None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        t = self.training
        reusable = not t.stateful and self.record_dp is None
        if reusable and self._optimizer is not None:
            return self._optimizer
        optimizer = make_optimizer(self._params, name=t.optimizer, lr=t.lr,
                                   momentum=t.momentum, weight_decay=t.weight_decay)
        if reusable:
            self._optimizer = optimizer
        return optimizer

    @property
    def participant_id(self) -> int:
        return self.data.participant_id

    def fit(self, global_weights: np.ndarray, ins: FitIns) -> FitRes:
        t = self.training
        started = time.perf_counter()
        set_flat(self.model, global_weights, self._params)
        optimizer = self._make_optimizer()
        state = _load_state(ins.state)
        if "optimizer" in state:
            optimizer.load_state_dict(torch.load(io.BytesIO(state["optimizer"]),
                                                 weights_only=True))
        anchor = ([p.detach().clone() for p in self._params]
                  if t.proximal_mu > 0 else None)
        generator = torch.Generator().manual_seed(ins.seed)
        model, proximal_mu, session = self.model, t.proximal_mu, None
        if self.record_dp is not None:
            # Checks this participant's budget first; FedProx moves into the DP step.
            session = self.record_dp.begin(
                optimizer, num_examples=len(self.data.x_train), state=state.get("record_dp"),
                seed=ins.seed, participant_id=self.participant_id,
                proximal_mu=t.proximal_mu, anchor=anchor)
            model, optimizer, proximal_mu = self.record_dp.model, session.optimizer, 0.0
        loss_sum, seen = 0.0, 0
        amp = t.amp
        scaler = make_grad_scaler(amp) if amp is not None else None
        for _ in range(t.epochs if t.ddp is None else 0):  # ddp: the epochs run below
            batches = (session.batches(self.data.x_train, self.data.y_train, generator)
                       if session is not None else
                       tensor_batches(self.data.x_train, self.data.y_train,
                                      batch_size=t.batch_size, generator=generator))
            stats = train_epoch(model, batches, optimizer, proximal_mu=proximal_mu,
                                anchor=anchor, device=self.data.x_train.device,
                                autocast_dtype=amp.autocast_dtype if amp else None,
                                scaler=scaler, step_on_empty=session is not None)
            loss_sum += stats.loss * stats.num_examples
            seen += stats.num_examples
        if t.ddp is not None:
            loss_sum, seen = self._fit_ddp(ins, t.ddp)
        delta = get_flat(self.model, self._params) - global_weights
        dp_metrics: dict[str, float] = {}
        if session is not None:
            state["record_dp"], dp_metrics = session.finish(ins.server_round)
        if t.stateful:
            buf = io.BytesIO()
            torch.save(optimizer.state_dict(), buf)
            state["optimizer"] = buf.getvalue()
        return self.report(ins, delta, state=state, train_loss=loss_sum / max(seen, 1),
                           fit_seconds=time.perf_counter() - started, metrics=dp_metrics)

    @staticmethod
    def carried_state(ins: FitIns) -> dict[str, Any]:
        """The state this participant carried out of its previous round."""
        return _load_state(ins.state)

    def report(self, ins: FitIns, delta: np.ndarray, *, state: dict[str, Any],
               train_loss: float, fit_seconds: float,
               metrics: dict[str, float] | None = None) -> FitRes:
        """Encode a trained update through the wire stages into this round's FitRes.

        Shared by :meth:`fit` and the host's vectorised path, which trains many
        participants at once and hands each one its delta here.
        """
        num_examples = len(self.data.x_train)
        if self.pipeline.stages:
            ctx = UpdateContext(self.participant_id, ins.server_round, num_examples,
                                rng=np.random.default_rng(ins.seed),
                                state=state.get("stages", {}),
                                tensor_sizes=tuple(p.numel() for p in self._params))
            payload = self.pipeline.encode(delta, ctx)
            if ctx.state or "stages" in state:
                # Stateless stages (DP clipping) leave nothing to carry: no state
                # to serialise here and to ship back with every later round.
                state["stages"] = ctx.state
        else:
            payload = delta
        return FitRes(
            participant_id=self.participant_id,
            server_round=ins.server_round,
            delta=payload,
            num_examples=num_examples,
            payload_bytes=serialized_bytes(payload),
            metrics={"train_loss": train_loss,
                     "fit_seconds": fit_seconds, **(metrics or {})},
            state=safe_format.dumps(state) if state else None,
        )

    def _fit_ddp(self, ins: FitIns, d: ParticipantConfig) -> tuple[float, int]:
        """The round's epochs as a Ray Train DDP job; ``self.model`` ends trained.

        Returns (loss × examples, examples) of the last epoch, like the local loop.
        """
        from rayfed.train.ddp import Scaling, ddp_local_round

        t = self.training
        opt = Optimization(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                           optimizer=t.optimizer, momentum=t.momentum,
                           weight_decay=t.weight_decay, proximal_mu=t.proximal_mu)
        loss = ddp_local_round(
            self.model, self.data.x_train, self.data.y_train, opt=opt,
            scaling=Scaling(d.num_workers, d.use_gpu, dict(d.resources_per_worker)),
            precision=d.precision, seed=ins.seed, storage_path=d.storage_path,
            run_name=f"participant{self.participant_id}_round{ins.server_round}_{ins.seed}")
        n = len(self.data.x_train)
        return loss * n, n

    def evaluate(self, global_weights: np.ndarray, server_round: int) -> EvalRes:
        set_flat(self.model, global_weights)
        loss, acc = evaluate(self.model, self.data.x_val, self.data.y_val)
        return EvalRes(self.participant_id, server_round, loss, acc, len(self.data.x_val))
