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


FailureKind = Literal["error", "crash", "timeout", "late", "cancelled"]


@dataclass(frozen=True)
class Failure:
    participant_id: int
    server_round: int
    kind: FailureKind
    reason: str


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
    accepted: tuple[FitRes, ...] = ()
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
    bytes_up: int
    bytes_down: int
    train_loss: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    failures: tuple[Failure, ...] = ()
