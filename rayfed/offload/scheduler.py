"""The scheduler actor: replays a task stream and places each task as it arrives.

Per task, in order: admit (bounded intake; a full intake blocks the stream —
backpressure) → snapshot live load → estimate every (device, variant) with the
cost model → ``decide`` (a pure policy) → dispatch, or hold the task while the
chosen queue is full → on completion, decrement the device's load and update
its EWMA rate → on a device's death, mark it dead, drop its load, and put each
of its tasks back at the front of the line (counted as a reassignment).

:class:`~rayfed.offload.cost.LoadLedger` holds the live load; :class:`Scheduler`,
an asyncio Ray actor, is the shell around it and the policies.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from rayfed.data.datasets import ArrayDataset
from rayfed.errors import RayfedError
from rayfed.offload.cost import LoadLedger, RateTable, candidates, rate_key
from rayfed.offload.devices import TaskRequest, TaskResult
from rayfed.offload.policies import Placement, get_policy
from rayfed.offload.profiles import DeviceProfile
from rayfed.offload.records import StreamResult, TaskRecord
from rayfed.offload.tasks import Task
from rayfed.offload.zoo import batch


class Scheduler:
    """Asyncio Ray actor placing a stream of tasks on device actors."""

    def __init__(self, profiles: Sequence[DeviceProfile], devices: Mapping[str, Any],
                 rates: RateTable, data: Mapping[str, ArrayDataset], *, policy: str,
                 queue_capacity: int, intake_capacity: int, max_accuracy_drop: float,
                 threshold: float, seed: int, lookahead: int = 8) -> None:
        self.profiles = {p.name: p for p in profiles}
        self.devices = dict(devices)
        self.rates = rates
        self.data = data
        self.policy_name = policy
        self.policy = get_policy(policy)
        self.ledger = LoadLedger(profiles, capacity=queue_capacity)
        self.intake_capacity = intake_capacity
        self.max_accuracy_drop = max_accuracy_drop
        self.threshold = threshold
        self.seed = seed
        self.lookahead = lookahead

    async def loads(self) -> dict[str, tuple[float, int]]:
        return self.ledger.outstanding()

    async def progress(self) -> int:
        """Tasks completed so far in the current stream."""
        return len(getattr(self, "_records", ()))

    async def run_stream(self, tasks: Sequence[Task]) -> StreamResult:
        self._t0 = time.monotonic()
        self._intake: deque[Task] = deque()
        self._retry: deque[Task] = deque()
        self._wake, self._space = asyncio.Event(), asyncio.Event()
        self._records: list[TaskRecord] = []
        self._attempts: dict[int, int] = {}
        self._pending: set[asyncio.Task] = set()
        self._error: BaseException | None = None
        self._reassigned, self._max_intake = 0, 0
        self._decision_s: dict[int, float] = {}
        producer = asyncio.create_task(self._produce(tasks))
        while len(self._records) < len(tasks):
            if self._error is not None:
                raise self._error
            if self._place_some():
                continue
            if (self._retry or self._intake) and self.ledger.total_tasks() == 0:
                task = (self._retry or self._intake)[0]
                raise RayfedError(
                    f"policy {self.policy_name!r} has nowhere to run task {task.task_id} "
                    f"({task.kind.name}); dead devices: {sorted(self.ledger.dead)}")
            await self._sleep_until_woken()
        await producer
        return StreamResult(policy=self.policy_name, records=tuple(self._records),
                            reassignments=self._reassigned,
                            dead_devices=tuple(sorted(self.ledger.dead)),
                            decision_s=tuple(self._decision_s.values()),
                            outstanding=self.ledger.outstanding(),
                            max_intake=self._max_intake, peak_queue=dict(self.ledger.peak))

    def _now(self) -> float:
        return time.monotonic() - self._t0

    async def _sleep_until_woken(self) -> None:
        self._wake.clear()
        await self._wake.wait()

    async def _produce(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            delay = task.arrival_s - self._now()
            if delay > 0:
                await asyncio.sleep(delay)
            while len(self._intake) >= self.intake_capacity:  # backpressure
                self._space.clear()
                await self._space.wait()
            self._intake.append(task)
            self._max_intake = max(self._max_intake, len(self._intake))
            self._wake.set()

    def _place_some(self) -> bool:
        """Place what can be placed among the first ``lookahead`` waiting tasks, oldest
        first (reassigned ones before new ones). A task whose device is full is held
        without blocking the tasks behind it; a full intake blocks the stream."""
        placed, scanned = False, 0
        for line in (self._retry, self._intake):
            i = 0
            while i < len(line) and scanned < self.lookahead:
                task = line[i]
                scanned += 1
                start = time.perf_counter()
                placement = self._decide(task)
                self._decision_s[task.task_id] = (self._decision_s.get(task.task_id, 0.0)
                                                  + time.perf_counter() - start)
                if placement is None:
                    i += 1
                    continue
                del line[i]
                self._space.set()
                self._dispatch(task, placement)
                placed = True
        return placed

    def _decide(self, task: Task) -> Placement | None:
        est = candidates(task, self.ledger.snapshot(), self.profiles[task.origin],
                         self.rates.rates, now_s=self._now(),
                         max_accuracy_drop=self.max_accuracy_drop)
        return self.policy(task, est, threshold=self.threshold, seed=self.seed)

    def _dispatch(self, task: Task, placement: Placement) -> None:
        k, est = task.kind, placement.estimate
        x, y = batch(self.data[k.model], start=task.batch_start, size=k.batch_size)
        req = TaskRequest(task_id=task.task_id, kind=k.name, model=k.model, op=k.op,
                          variant=placement.variant, transfer_in_s=est.transfer_in_s,
                          transfer_out_s=est.transfer_out_s)
        ref = self.devices[placement.device].run.remote(req, x, y if k.op == "train" else y[:0])
        self.ledger.add(placement.device, task.task_id, est.compute_s)
        self._attempts[task.task_id] = self._attempts.get(task.task_id, 0) + 1
        job = asyncio.create_task(self._complete(task, placement, ref))
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)

    async def _complete(self, task: Task, placement: Placement, ref: ray.ObjectRef) -> None:
        device = placement.device
        try:
            res: TaskResult = await ref
        except ray.exceptions.RayActorError:
            # The device died: its load goes, the task goes back to the front of the line.
            self.ledger.kill(device)
            self._reassigned += 1
            self._retry.append(task)
            self._wake.set()
            return
        except Exception as exc:
            self._error = RayfedError(f"task {task.task_id} ({task.kind.name}, "
                                      f"{placement.variant}) failed on {device}: {exc}")
            self._wake.set()
            return
        self.ledger.remove(device, task.task_id)
        self.rates.observe(device, rate_key(task.kind.name, res.variant),
                           flops=max(task.kind.flops, 1), seconds=res.compute_s)
        est = placement.estimate
        self._records.append(TaskRecord(
            task_id=task.task_id, kind=task.kind.name, origin=task.origin, device=device,
            variant=res.variant, arrival_s=task.arrival_s, finish_s=self._now(),
            deadline_s=task.deadline_s, predicted_finish_s=est.finish_s,
            compute_s=res.compute_s, bytes_moved=est.bytes_moved, energy_j=est.energy_j,
            accuracy=est.accuracy, attempts=self._attempts[task.task_id]))
        self._wake.set()
