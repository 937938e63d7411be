"""One offloading experiment on Ray: zoo → fleet → calibration → one stream per policy.

The fleet and its calibration are shared by every policy of a run, so policies
are compared on the same devices and the same stream; each policy starts from
the calibrated rates and learns online from there. A device that died during
a policy's stream is replaced before the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import ray

from rayfed.offload.config import OffloadConfig
from rayfed.offload.cost import RateTable, variants_for
from rayfed.offload.devices import TaskRequest, spawn_fleet
from rayfed.offload.profiles import fleet_profiles
from rayfed.offload.scheduler import Scheduler, StreamResult
from rayfed.offload.tasks import Task, describe_kinds, make_stream
from rayfed.offload.zoo import batch, build_zoo, load_data

ProgressFn = Callable[[int], None]


class OffloadRun:
    def __init__(self, cfg: OffloadConfig) -> None:
        self.cfg = cfg
        self.profiles = fleet_profiles(cfg.fleet)
        self.zoo = build_zoo(cfg.workload, seed=cfg.seed)
        self.kinds = describe_kinds(cfg.workload, self.zoo)
        pools = {name: load_data(name)[0] for name in {z.dataset for z in self.zoo.values()}}
        self.data = {k: pools[z.dataset] for k, z in self.zoo.items()}
        self.devices = spawn_fleet(self.profiles, self.zoo, cfg.fleet,
                                   crash_device=cfg.faults.crash_device,
                                   crash_after_tasks=cfg.faults.crash_after_tasks)
        self.rates = self.calibrate()
        # Devices that died in a stream; replaced before the next one starts.
        self._dead: set[str] = set()

    def stream(self) -> list[Task]:
        """The workload: the same for every policy of this run."""
        names = list(self.cfg.workload.tasks)
        origins = [p.name for p in self.profiles if p.kind == "edge"]
        return make_stream([self.kinds[n] for n in names],
                           [self.cfg.workload.tasks[n].weight for n in names], origins,
                           num_tasks=self.cfg.num_tasks, arrival_rate=self.cfg.arrival_rate,
                           rng=np.random.default_rng([self.cfg.seed, 0x0FF10AD]))

    def calibrate(self) -> RateTable:
        """Each device runs each task kind in each variant it may use a few times."""
        table = RateTable(alpha=self.cfg.ewma_alpha)
        probes = {n: Task(task_id=-1, kind=k, origin="", arrival_s=0.0, deadline_s=0.0,
                          batch_start=0) for n, k in self.kinds.items()}
        for p in self.profiles:
            reqs, batches = [], []
            for n, k in self.kinds.items():
                x, y = batch(self.data[k.model], start=0, size=k.batch_size)
                # Calibrate int8 even beyond the accuracy limit: cheap, and complete.
                for v in variants_for(probes[n], p, max_accuracy_drop=float("inf")):
                    reqs.append(TaskRequest(task_id=-1, kind=n, model=k.model, op=k.op,
                                            variant=v, transfer_in_s=0.0, transfer_out_s=0.0))
                    batches.append((x, y))
            # One device at a time: parallel runs on shared cores would disturb
            # each other's measurements.
            measured = ray.get(self.devices[p.name].calibrate.remote(
                reqs, batches, self.cfg.calibration_runs))
            for key, seconds in measured.items():
                kind = key.split(":")[0]
                table.calibrate(p.name, key, flops=max(self.kinds[kind].flops, 1),
                                seconds=seconds)
        return table

    def run_policy(self, policy: str, tasks: Sequence[Task], *,
                   on_progress: ProgressFn | None = None) -> StreamResult:
        if self._dead:
            self._replace(sorted(self._dead))
            self._dead.clear()
        sched: Any = ray.remote(Scheduler).options(
            num_cpus=self.cfg.fleet.actor_num_cpus, max_concurrency=1000).remote(
            self.profiles, self.devices, self.rates.copy(), self.data, policy=policy,
            queue_capacity=self.cfg.fleet.queue_capacity,
            intake_capacity=self.cfg.intake_capacity,
            max_accuracy_drop=self.cfg.max_accuracy_drop, threshold=self.cfg.threshold,
            seed=self.cfg.seed, lookahead=self.cfg.lookahead)
        try:
            ref = sched.run_stream.remote(list(tasks))
            while not ray.wait([ref], timeout=0.5)[0]:
                if on_progress is not None:
                    on_progress(ray.get(sched.progress.remote()))
            result: StreamResult = ray.get(ref)
        finally:
            ray.kill(sched)
        self._dead.update(result.dead_devices)
        return result

    def _replace(self, names: Sequence[str]) -> None:
        by_name = {p.name: p for p in self.profiles}
        fresh = spawn_fleet(tuple(by_name[n] for n in names), self.zoo, self.cfg.fleet)
        self.devices.update(fresh)

    def close(self) -> None:
        for handle in self.devices.values():
            ray.kill(handle, no_restart=True)
        self.devices = {}

    def __enter__(self) -> OffloadRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
