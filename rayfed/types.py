"""Values that cross the boundary between the server and the participants.

Failures and late results are values, not exceptions: the round loop hands them
to its decision rule as lists (as Flower's strategies receive ``failures``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class FitIns:
    """What the server asks of one participant in one round."""

    participant_id: int
    server_round: int
    # Seed of the participant's local randomness this round; derived from
    # (seed, round, participant) so that it does not depend on which actor serves it.
    seed: int
    # Participant state carried between rounds (optimizer state, later accountants
    # and error-feedback residuals), opaque to the server.
    state: bytes | None = None


@dataclass(frozen=True)
class FitRes:
    participant_id: int
    server_round: int
    # The encoded update: local weights minus the broadcast global weights.
    delta: np.ndarray
    num_examples: int
    # Serialized size of ``delta`` as it crosses the wire.
    payload_bytes: int
    metrics: dict[str, float] = field(default_factory=dict)
    state: bytes | None = None


@dataclass(frozen=True)
class PartialAggregate:
    """Several participants' updates summed where they ran (pooled placement).

    Only for linear reducers (the weighted mean): the server adds the partial sums
    and divides by the total ``num_examples``, which is the same FedAvg. Each
    update is validated before it enters the sum, as :func:`rayfed.fl.rounds.decide`
    would validate it at the server.
    """

    server_round: int
    participant_ids: tuple[int, ...]
    num_examples: tuple[int, ...]
    # Σ num_examples_i · delta_i, in float64 (Σ delta_i, weight 1, under
    # user-level DP: DP-FedAvg sums clipped updates).
    weighted_sum: np.ndarray
    payload_bytes: int
    train_loss_sum: float
    states: dict[int, bytes] = field(default_factory=dict)
    # Each metric's maximum over the participants (e.g. record-level DP's epsilon).
    max_metrics: dict[str, float] = field(default_factory=dict)


FailureKind = Literal["error", "crash", "timeout", "late", "cancelled", "rejected"]


@dataclass(frozen=True)
class Failure:
    participant_id: int
    server_round: int
    kind: FailureKind
    reason: str
    # Bytes of an update that was received and then refused where it arrived
    # (e.g. screened out in a pooled actor before its partial sum): still uploaded.
    payload_bytes: int = 0


@dataclass(frozen=True)
class EvalRes:
    participant_id: int
    server_round: int
    loss: float
    accuracy: float
    num_examples: int


@dataclass(frozen=True)
class RoundDecision:
    """The verdict on a round's collected results."""

    proceed: bool
    reason: str
    accepted: tuple[FitRes | PartialAggregate, ...] = ()
    rejected: tuple[Failure, ...] = ()


@dataclass(frozen=True)
class RoundResult:
    """What one round did, as reported to progress display and tracking."""

    server_round: int
    status: Literal["completed", "aborted"]
    reason: str
    num_selected: int
    num_reported: int
    num_failed: int
    num_late_rejected: int
    seconds: float
    # Every payload that reached the server this round, accepted or not.
    bytes_up: int
    bytes_down: int
    train_loss: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    # Global model on the participants' validation splits (fl.federated_eval_every).
    federated_accuracy: float | None = None
    failures: tuple[Failure, ...] = ()
    # Updates refused by screening (malformed, non-finite, implausible counts or
    # norms; rayfed.fl.screening), counted among num_failed.
    num_rejected: int = 0
    # The part of bytes_up that went into the aggregate.
    bytes_up_accepted: int = 0
