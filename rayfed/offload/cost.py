"""The completion-time model: queue wait + compute + transfer, learned online.

For a task arising at device ``o`` and a candidate device ``d`` the predicted
finish is

    finish = now + max(transfer_in, wait_d) + flops / rate_d + transfer_out

* ``wait_d`` is live load: the predicted compute still outstanding on ``d``,
  which the scheduler decrements when each task completes; the input transfer
  overlaps it, since links and processors work in parallel.
* ``rate_d`` is in FLOP/s, calibrated by measurement before the stream and then
  tracked with an exponentially weighted moving average (EWMA) of each
  completion's measured rate. It is kept per device *and* task kind/variant:
  small kernels reach very different fractions of a device's peak, so a single
  rate per device would misprice either the light or the heavy tasks.
* transfers follow :func:`rayfed.offload.profiles.transfer_s`; zero on ``o``.

This is the earliest-finish-time estimate of list scheduling (HEFT, Topcuoglu et
al. 2002) applied online, one task at a time. Everything here is pure except two
small holders of state: :class:`RateTable` (the EWMA rates) and
:class:`LoadLedger` (the live load the scheduler keeps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rayfed.offload.profiles import DeviceProfile, transfer_s
from rayfed.offload.tasks import Task
from rayfed.offload.types import DeviceKind


@dataclass(frozen=True)
class DeviceLoad:
    """A device as the scheduler sees it at one instant."""

    profile: DeviceProfile
    outstanding_s: float = 0.0
    outstanding_tasks: int = 0
    capacity: int = 8
    alive: bool = True

    @property
    def has_room(self) -> bool:
        return self.alive and self.outstanding_tasks < self.capacity


@dataclass(frozen=True)
class Estimate:
    """Predicted cost of running one task on one device in one variant."""

    device: str
    kind: DeviceKind
    variant: str
    wait_s: float
    compute_s: float
    transfer_in_s: float
    transfer_out_s: float
    finish_s: float
    bytes_moved: int
    energy_j: float
    accuracy: float
    has_room: bool
    is_origin: bool
    outstanding_s: float


def rate_key(kind_name: str, variant: str) -> str:
    return f"{kind_name}:{variant}"


def ewma(old: float, new: float, *, alpha: float) -> float:
    return (1.0 - alpha) * old + alpha * new


def predict(task: Task, load: DeviceLoad, origin: DeviceProfile, *, variant: str,
            rate_flops_per_s: float, now_s: float) -> Estimate:
    dev = load.profile
    k = task.kind
    compute_s = k.flops / rate_flops_per_s
    t_in = transfer_s(k.input_bytes, origin, dev)
    t_out = transfer_s(k.output_bytes, dev, origin)
    finish = now_s + max(t_in, load.outstanding_s) + compute_s + t_out
    moved = 0 if dev.name == origin.name else k.input_bytes + k.output_bytes
    energy = k.flops * dev.energy_nj_per_flop * 1e-9 if dev.energy_nj_per_flop else 0.0
    return Estimate(device=dev.name, kind=dev.kind, variant=variant,
                    wait_s=load.outstanding_s, compute_s=compute_s, transfer_in_s=t_in,
                    transfer_out_s=t_out, finish_s=finish, bytes_moved=moved,
                    energy_j=energy, accuracy=k.accuracy[variant], has_room=load.has_room,
                    is_origin=dev.name == origin.name, outstanding_s=load.outstanding_s)


def variants_for(task: Task, device: DeviceProfile, *, max_accuracy_drop: float) -> list[str]:
    """``fp32``, plus ``int8`` where the device may run it and it loses little accuracy."""
    acc = task.kind.accuracy
    out = ["fp32"]
    if (device.allow_int8 and "int8" in acc
            and acc["fp32"] - acc["int8"] <= max_accuracy_drop):
        out.append("int8")
    return out


def candidates(task: Task, loads: Sequence[DeviceLoad], origin: DeviceProfile,
               rates: Mapping[tuple[str, str], float], *, now_s: float,
               max_accuracy_drop: float) -> list[Estimate]:
    """An estimate for every live device that can hold the model, in every variant."""
    out = []
    need = task.kind.model_bytes + task.kind.input_bytes + task.kind.output_bytes
    for load in loads:
        dev = load.profile
        if not load.alive or need > dev.memory_bytes:
            continue
        for variant in variants_for(task, dev, max_accuracy_drop=max_accuracy_drop):
            rate = rates[(dev.name, rate_key(task.kind.name, variant))]
            out.append(predict(task, load, origin, variant=variant, rate_flops_per_s=rate,
                               now_s=now_s))
    return out


class RateTable:
    """Per (device, kind:variant) FLOP/s: calibrated at start, then an EWMA."""

    def __init__(self, *, alpha: float) -> None:
        self.alpha = alpha
        self.rates: dict[tuple[str, str], float] = {}

    def calibrate(self, device: str, key: str, *, flops: int, seconds: Sequence[float]) -> None:
        """Seed with the median of the calibration runs (robust to a cold first run)."""
        s = sorted(seconds)[len(seconds) // 2]
        self.rates[(device, key)] = flops / max(s, 1e-9)

    def observe(self, device: str, key: str, *, flops: int, seconds: float) -> None:
        new = flops / max(seconds, 1e-9)
        old = self.rates.get((device, key), new)
        self.rates[(device, key)] = ewma(old, new, alpha=self.alpha)

    def copy(self) -> RateTable:
        out = RateTable(alpha=self.alpha)
        out.rates = dict(self.rates)
        return out


class LoadLedger:
    """Outstanding predicted compute per device, task by task, so that it returns to
    exactly zero when every task has completed (no floating-point drift)."""

    def __init__(self, profiles: Sequence[DeviceProfile], *, capacity: int) -> None:
        self.profiles = {p.name: p for p in profiles}
        self.capacity = capacity
        self.inflight: dict[str, dict[int, float]] = {p.name: {} for p in profiles}
        self.dead: set[str] = set()
        # Most tasks ever outstanding per device: evidence that queues stayed bounded.
        self.peak: dict[str, int] = {p.name: 0 for p in profiles}

    def add(self, device: str, task_id: int, predicted_s: float) -> None:
        self.inflight[device][task_id] = predicted_s
        self.peak[device] = max(self.peak[device], len(self.inflight[device]))

    def remove(self, device: str, task_id: int) -> None:
        self.inflight[device].pop(task_id, None)

    def kill(self, device: str) -> None:
        self.dead.add(device)
        self.inflight[device].clear()

    def snapshot(self) -> list[DeviceLoad]:
        return [DeviceLoad(profile=p, outstanding_s=sum(self.inflight[n].values()),
                           outstanding_tasks=len(self.inflight[n]), capacity=self.capacity,
                           alive=n not in self.dead)
                for n, p in self.profiles.items()]

    def outstanding(self) -> dict[str, tuple[float, int]]:
        return {n: (sum(t.values()), len(t)) for n, t in self.inflight.items()}

    def total_tasks(self) -> int:
        return sum(len(t) for t in self.inflight.values())
