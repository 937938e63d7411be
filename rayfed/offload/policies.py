"""Placement policies: pure functions ``decide(task, estimates) -> Placement | None``.

Each policy sees the cost model's :class:`~rayfed.offload.cost.Estimate` for
every live (device, variant) pair and returns a frozen :class:`Placement`, or
``None`` when the device it wants has a full queue: the scheduler then holds the
task until a completion frees room (backpressure).

* ``threshold`` — the baseline from the source document's ``EdgeComputingManager``:
  complexity > 0.5 goes to the cloud, anything else stays on its edge device. It
  gets live load (least-loaded cloud worker), which the original never had.
* ``greedy_eft`` — earliest predicted finish time (online HEFT; Topcuoglu et al.
  2002), over every device and variant.
* ``deadline_aware`` — of the placements predicted to meet the deadline, the one
  that moves the fewest bytes, then uses the least energy, then finishes first;
  if none can meet it, the earliest finish (least lateness).
* ``all_edge``, ``all_cloud``, ``round_robin``, ``random`` — baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rayfed.offload.cost import Estimate
from rayfed.offload.tasks import Task


@dataclass(frozen=True)
class Placement:
    task_id: int
    device: str
    variant: str
    estimate: Estimate
    policy: str


class Policy(Protocol):
    def __call__(self, task: Task, estimates: Sequence[Estimate], *,
                 threshold: float, seed: int) -> Placement | None: ...


def _place(task: Task, e: Estimate | None, policy: str) -> Placement | None:
    if e is None or not e.has_room:
        return None
    return Placement(task_id=task.task_id, device=e.device, variant=e.variant, estimate=e,
                     policy=policy)


def _fp32(estimates: Sequence[Estimate]) -> list[Estimate]:
    return [e for e in estimates if e.variant == "fp32"]


def _least_loaded(estimates: Sequence[Estimate]) -> Estimate | None:
    """The device with the least outstanding work, preferring ones with room."""
    if not estimates:
        return None
    return min(estimates, key=lambda e: (not e.has_room, e.outstanding_s, e.device))


def _local_or_least_loaded_edge(estimates: Sequence[Estimate]) -> Estimate | None:
    """The task's own edge device; another edge device only if its own died."""
    edge = [e for e in _fp32(estimates) if e.kind == "edge"]
    local = next((e for e in edge if e.is_origin), None)
    return local if local is not None else _least_loaded(edge)


def threshold(task: Task, estimates: Sequence[Estimate], *, threshold: float = 0.5,
              seed: int = 0) -> Placement | None:
    if task.kind.complexity > threshold:
        cloud = [e for e in _fp32(estimates) if e.kind == "cloud"]
        return _place(task, _least_loaded(cloud), "threshold")
    return _place(task, _local_or_least_loaded_edge(estimates), "threshold")


def greedy_eft(task: Task, estimates: Sequence[Estimate], *, threshold: float = 0.5,
               seed: int = 0) -> Placement | None:
    room = [e for e in estimates if e.has_room]
    best = min(room, key=lambda e: (e.finish_s, e.bytes_moved, e.device), default=None)
    return _place(task, best, "greedy_eft")


def deadline_aware(task: Task, estimates: Sequence[Estimate], *, threshold: float = 0.5,
                   seed: int = 0) -> Placement | None:
    room = [e for e in estimates if e.has_room]
    on_time = [e for e in room if e.finish_s <= task.deadline_s]
    best: Estimate | None
    if on_time:
        best = min(on_time, key=lambda e: (e.bytes_moved, e.energy_j, e.finish_s, e.device))
    else:
        best = min(room, key=lambda e: (e.finish_s, e.device), default=None)
    return _place(task, best, "deadline_aware")


def all_edge(task: Task, estimates: Sequence[Estimate], *, threshold: float = 0.5,
             seed: int = 0) -> Placement | None:
    return _place(task, _local_or_least_loaded_edge(estimates), "all_edge")


def all_cloud(task: Task, estimates: Sequence[Estimate], *, threshold: float = 0.5,
              seed: int = 0) -> Placement | None:
    cloud = [e for e in _fp32(estimates) if e.kind == "cloud"]
    return _place(task, _least_loaded(cloud), "all_cloud")


def round_robin(task: Task, estimates: Sequence[Estimate], *, threshold: float = 0.5,
                seed: int = 0) -> Placement | None:
    """Device ``task_id mod n`` of the live devices (by name); the next one with room
    if that queue is full."""
    devs = sorted(_fp32(estimates), key=lambda e: e.device)
    if not devs:
        return None
    n = len(devs)
    for i in range(n):
        e = devs[(task.task_id + i) % n]
        if e.has_room:
            return _place(task, e, "round_robin")
    return None


def random(task: Task, estimates: Sequence[Estimate], *, threshold: float = 0.5,
           seed: int = 0) -> Placement | None:
    """Uniform over live devices with room; the draw depends only on (seed, task_id)."""
    room = sorted((e for e in _fp32(estimates) if e.has_room), key=lambda e: e.device)
    if not room:
        return None
    i = int(np.random.default_rng([seed, task.task_id]).integers(len(room)))
    return _place(task, room[i], "random")


POLICIES: dict[str, Callable[..., Placement | None]] = {
    "threshold": threshold,
    "greedy_eft": greedy_eft,
    "deadline_aware": deadline_aware,
    "all_edge": all_edge,
    "all_cloud": all_cloud,
    "round_robin": round_robin,
    "random": random,
}


def get_policy(name: str) -> Callable[..., Placement | None]:
    if name not in POLICIES:
        raise ValueError(f"offload.policy={name!r} is unknown; pick one of {sorted(POLICIES)}")
    return POLICIES[name]
