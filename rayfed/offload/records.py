"""What a stream produced: one frozen record per task, and the stream's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskRecord:
    task_id: int
    kind: str
    origin: str
    device: str
    variant: str
    arrival_s: float
    finish_s: float
    deadline_s: float
    predicted_finish_s: float
    compute_s: float
    bytes_moved: int
    energy_j: float
    accuracy: float
    attempts: int

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s


@dataclass(frozen=True)
class StreamResult:
    policy: str
    records: tuple[TaskRecord, ...]
    reassignments: int
    dead_devices: tuple[str, ...]
    decision_s: tuple[float, ...]
    outstanding: Mapping[str, tuple[float, int]]
    max_intake: int
    peak_queue: Mapping[str, int]
