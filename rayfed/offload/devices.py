"""Emulated devices: a plain runtime that does the real work, and thin Ray actor shells.

Each device really runs its task (an inference batch or a training step of a
zoo model) with one torch thread and measures the CPU time of that work. Its
emulated compute time is that measurement times the profile's ``slowdown``; the
actor holds its processor (an asyncio lock, FIFO) for the emulated time by
sleeping out the difference. Links are emulated the same way: the actor sleeps
the input transfer before queueing and the output transfer after. Sleeping
costs no CPU, so ten emulated devices fit on a two-core machine without
distorting each other's measurements.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from rayfed.offload.config import FleetConfig
from rayfed.offload.profiles import DeviceProfile
from rayfed.offload.zoo import ZooModel, instantiate, run_task
from rayfed.runtime import available_resources


@dataclass(frozen=True)
class TaskRequest:
    task_id: int
    kind: str
    model: str
    op: str
    variant: str
    transfer_in_s: float
    transfer_out_s: float


@dataclass(frozen=True)
class TaskResult:
    task_id: int
    device: str
    variant: str
    compute_s: float  # emulated
    measured_s: float  # real CPU time on this machine
    output_bytes: int


class DeviceRuntime:
    """The work of one device, without Ray: models, execution, emulated timing."""

    def __init__(self, profile: DeviceProfile, zoo: Mapping[str, ZooModel], *,
                 torch_device: str = "cpu", crash_after_tasks: int | None = None) -> None:
        self.profile = profile
        self.torch_device = torch.device(torch_device)
        self.models = {k: {v: m.to(self.torch_device) for v, m in instantiate(zm).items()}
                       for k, zm in zoo.items()}
        self.crash_after_tasks = crash_after_tasks
        self.executed = 0

    def execute(self, req: TaskRequest, x: np.ndarray, y: np.ndarray, *,
                count: bool = True) -> tuple[float, Any]:
        """Run ``req`` for real; return (measured seconds, output). Calibration runs
        pass ``count=False``: they are not tasks, and never trigger the chaos crash."""
        if count:
            self.executed += 1
            if self.crash_after_tasks is not None and self.executed >= self.crash_after_tasks:
                os._exit(1)  # chaos: the device dies mid-task, with more tasks queued
        model = self.models[req.model][req.variant]
        # Ray hands over read-only arrays; torch wants writable ones.
        xt = torch.tensor(x, device=self.torch_device)
        yt = torch.tensor(y, device=self.torch_device)
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = run_task(model, req.op, xt, yt)
            torch.cuda.synchronize()
            return time.perf_counter() - start, out.cpu()
        start = time.thread_time()
        out = run_task(model, req.op, xt, yt)
        return time.thread_time() - start, out

    def calibrate(self, req: TaskRequest, x: np.ndarray, y: np.ndarray, runs: int) -> list[float]:
        """Emulated compute seconds of ``runs`` runs, after one warm-up run."""
        self.execute(req, x, y, count=False)
        return [self.execute(req, x, y, count=False)[0] * self.profile.slowdown
                for _ in range(runs)]


class DeviceActor:
    """Async actor shell: FIFO processor, emulated links, real work."""

    def __init__(self, profile: DeviceProfile, zoo: Mapping[str, ZooModel], *,
                 torch_device: str = "cpu", crash_after_tasks: int | None = None) -> None:
        torch.set_num_threads(1)  # emulated devices share the host's cores
        self.rt = DeviceRuntime(profile, zoo, torch_device=torch_device,
                                crash_after_tasks=crash_after_tasks)
        self._processor: asyncio.Lock | None = None

    async def ready(self) -> str:
        return self.rt.profile.name

    async def calibrate(self, requests: list[TaskRequest], batches: list[tuple[Any, Any]],
                        runs: int) -> dict[str, list[float]]:
        return {f"{r.kind}:{r.variant}": self.rt.calibrate(r, x, y, runs)
                for r, (x, y) in zip(requests, batches, strict=True)}

    async def run(self, req: TaskRequest, x: np.ndarray, y: np.ndarray) -> TaskResult:
        if self._processor is None:
            self._processor = asyncio.Lock()
        await asyncio.sleep(req.transfer_in_s)
        async with self._processor:
            wall = time.perf_counter()
            measured, out = self.rt.execute(req, x, y)
            compute_s = measured * self.rt.profile.slowdown
            await asyncio.sleep(max(0.0, compute_s - (time.perf_counter() - wall)))
        await asyncio.sleep(req.transfer_out_s)
        return TaskResult(task_id=req.task_id, device=self.rt.profile.name,
                          variant=req.variant, compute_s=compute_s, measured_s=measured,
                          output_bytes=int(out.nbytes))


class EdgeDevice(DeviceActor):
    """A weak device near the data; CPU only."""


class CloudWorker(DeviceActor):
    """A strong, distant worker; runs on a GPU when one was given to it."""

    def __init__(self, profile: DeviceProfile, zoo: Mapping[str, ZooModel], *,
                 torch_device: str = "cpu", crash_after_tasks: int | None = None) -> None:
        gpu = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else torch_device
        super().__init__(profile, zoo, torch_device=gpu, crash_after_tasks=crash_after_tasks)


def _actor_options(profile: DeviceProfile, fleet: FleetConfig,
                   have: Mapping[str, float]) -> dict[str, Any]:
    """Ask for the custom ``edge``/``cloud`` resource only where the cluster has it
    (``have``: the custom resources :func:`rayfed.runtime.available_resources` kept)."""
    opts: dict[str, Any] = {"num_cpus": fleet.actor_num_cpus, "max_restarts": 0,
                            "max_task_retries": 0, "max_concurrency": 1000}
    if profile.kind in have:
        opts["resources"] = {profile.kind: fleet.resource_per_actor}
    if profile.kind == "cloud" and fleet.cloud_num_gpus > 0 and have.get("GPU", 0) > 0:
        opts["num_gpus"] = fleet.cloud_num_gpus
    return opts


def spawn_fleet(profiles: tuple[DeviceProfile, ...], zoo: Mapping[str, ZooModel],
                fleet: FleetConfig, *, crash_device: str | None = None,
                crash_after_tasks: int = 5) -> dict[str, Any]:
    """One actor per profile; returns ``{name: handle}`` once every actor is up."""
    cluster = ray.cluster_resources()
    have = {**available_resources({p.kind: fleet.resource_per_actor for p in profiles},
                                  what="the offload fleet", have=cluster),
            "GPU": cluster.get("GPU", 0.0)}
    zoo_ref = ray.put(dict(zoo))
    handles: dict[str, Any] = {}
    for p in profiles:
        cls = CloudWorker if p.kind == "cloud" else EdgeDevice
        remote = ray.remote(cls).options(**_actor_options(p, fleet, have))
        handles[p.name] = remote.remote(
            p, zoo_ref, crash_after_tasks=crash_after_tasks if p.name == crash_device else None)
    ray.get([h.ready.remote() for h in handles.values()])
    return handles
