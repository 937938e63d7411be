"""Typed schema of the offloading job, registered in Hydra's ConfigStore as ``offload_base``.

The dataclasses are the schema; ``conf/offload/*.yaml`` (fleet profiles) and
``conf/offload_job.yaml`` hold values. ``jobs/offload.py`` converts its
``DictConfig`` once with :func:`to_offload_config`; the library sees only these
objects. :func:`validate` returns every problem at once, each naming its key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayfed.errors import ConfigError
from rayfed.offload.types import DEVICE_KINDS, POLICY_NAMES, TASK_OPS, ZOO_DATASETS, device_name
from rayfed.schema import register, to_typed
from rayfed.tracking.config import TrackingConfig


@dataclass
class DeviceClassConfig:
    """One class of identical devices. Times are emulated: a device's compute time is
    the measured CPU time of the real work times ``slowdown``."""

    kind: str = "edge"
    count: int = 1
    slowdown: float = 100.0
    memory_mb: float = 512.0
    # Link between the device and the network core; a cloud worker's link is fat.
    bandwidth_mbps: float = 20.0
    latency_ms: float = 30.0
    energy_nj_per_flop: float | None = None
    # Edge devices may run a model's int8 variant when it has one.
    allow_int8: bool = True


@dataclass
class FleetConfig:
    devices: dict[str, DeviceClassConfig] = field(default_factory=dict)
    # Bounded queue per device: the scheduler holds tasks (backpressure) when full.
    queue_capacity: int = 8
    # CPUs reserved per device actor; small, because emulated devices mostly sleep.
    actor_num_cpus: float = 0.1
    # Custom Ray resource each actor asks for ({kind}: this); dropped when absent.
    resource_per_actor: float = 1.0
    # GPUs per cloud worker when the cluster has them (0 = CPU workers).
    cloud_num_gpus: float = 0.0


@dataclass
class ZooModelConfig:
    """A model tasks run: built from rayfed's registry, or loaded from ``source``."""

    name: str = "mlp"
    dataset: str = "digits"
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    channels: list[int] = field(default_factory=lambda: [16, 32])
    # Epochs of quick training on the data set at start (0 = random weights).
    train_epochs: int = 2
    # A state_dict file (*.pt / *.pth) or an MLflow model URI (runs:/<id>/model),
    # e.g. the model of a federated job; null = build from the registry.
    source: str | None = None


@dataclass
class TaskKindConfig:
    model: str = "mlp"
    op: str = "infer"
    batch_size: int = 64
    # Share of the stream (normalised over all kinds); 0 keeps the kind defined but off.
    weight: float = 1.0
    deadline_ms: float = 500.0


@dataclass
class WorkloadConfig:
    models: dict[str, ZooModelConfig] = field(default_factory=dict)
    tasks: dict[str, TaskKindConfig] = field(default_factory=dict)


@dataclass
class OffloadFaultConfig:
    """Chaos injection: this device's process exits while running its n-th task."""

    crash_device: str | None = None
    crash_after_tasks: int = 5


@dataclass
class OffloadConfig:
    # "all", one of rayfed.offload.types.POLICY_NAMES, or several, comma-separated and
    # quoted for Hydra: 'offload.policy="greedy_eft,threshold"'. Run in that order.
    policy: str = "greedy_eft,deadline_aware,threshold,all_cloud"
    num_tasks: int = 60
    # Poisson arrivals, tasks per second.
    arrival_rate: float = 40.0
    seed: int = 0
    # The source document's rule: complexity above this goes to the cloud.
    threshold: float = 0.5
    # Weight of a new measurement in the EWMA of each device's rate.
    ewma_alpha: float = 0.2
    # An int8 variant is a candidate only if it loses at most this much accuracy.
    max_accuracy_drop: float = 0.01
    # Tasks admitted but not yet placed; a full intake blocks the stream.
    intake_capacity: int = 64
    # Waiting tasks the scheduler tries per wake-up, so that a task held for a full
    # queue does not block the tasks behind it (bounded: each try costs a decision).
    lookahead: int = 8
    # Calibration runs of each task kind on each device before the stream.
    calibration_runs: int = 2
    fleet: FleetConfig = field(default_factory=FleetConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    faults: OffloadFaultConfig = field(default_factory=OffloadFaultConfig)


@dataclass
class OffloadJobConfig:
    name: str = "offload"
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(
        experiment="rayfed-offload", log_model=False))
    # Empty (and RAY_ADDRESS unset): start a local Ray with this many CPUs.
    ray_address: str | None = None
    num_cpus: int | None = None
    output_dir: str = "."


def register_offload_configs() -> None:
    """Register the schema with Hydra's ConfigStore (idempotent)."""
    register("offload_base", OffloadJobConfig)


def to_offload_config(cfg: Any) -> OffloadJobConfig:
    return to_typed(cfg, OffloadJobConfig, name="offload_base",
                    primary="conf/offload_job.yaml")


def selected_policies(cfg: OffloadConfig) -> list[str]:
    """The policies a run compares, in the order it runs them."""
    if cfg.policy.strip() == "all":
        return list(POLICY_NAMES)
    return [n.strip() for n in cfg.policy.split(",") if n.strip()]


def validate(cfg: OffloadConfig) -> list[str]:
    """Every problem with ``cfg``, each naming its key and the fix."""
    p: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    unknown = [n for n in selected_policies(cfg) if n not in POLICY_NAMES]
    check(not unknown and bool(selected_policies(cfg)),
          f"offload.policy={cfg.policy!r}: {', '.join(unknown) or 'no policy'} is not a "
          f"policy; pick 'all', or one or more (comma-separated) of {sorted(POLICY_NAMES)}")
    check(cfg.num_tasks >= 1, f"offload.num_tasks={cfg.num_tasks} must be >= 1")
    check(cfg.arrival_rate > 0, f"offload.arrival_rate={cfg.arrival_rate} must be > 0 tasks/s")
    check(0 <= cfg.threshold <= 1, f"offload.threshold={cfg.threshold} must be in [0, 1]")
    check(0 < cfg.ewma_alpha <= 1, f"offload.ewma_alpha={cfg.ewma_alpha} must be in (0, 1]")
    check(cfg.max_accuracy_drop >= 0,
          f"offload.max_accuracy_drop={cfg.max_accuracy_drop} must be >= 0")
    check(cfg.intake_capacity >= 1,
          f"offload.intake_capacity={cfg.intake_capacity} must be >= 1")
    check(cfg.lookahead >= 1, f"offload.lookahead={cfg.lookahead} must be >= 1")
    check(cfg.calibration_runs >= 1,
          f"offload.calibration_runs={cfg.calibration_runs} must be >= 1")

    fleet = cfg.fleet
    check(bool(fleet.devices), "offload.fleet.devices is empty; pick a fleet profile, "
                               "e.g. offload=default")
    for name, d in fleet.devices.items():
        key = f"offload.fleet.devices.{name}"
        check(d.kind in DEVICE_KINDS, f"{key}.kind={d.kind!r} must be one of {DEVICE_KINDS}")
        check(d.count >= 0, f"{key}.count={d.count} must be >= 0")
        check(d.slowdown > 0, f"{key}.slowdown={d.slowdown} must be > 0")
        check(d.memory_mb > 0, f"{key}.memory_mb={d.memory_mb} must be > 0")
        check(d.bandwidth_mbps > 0, f"{key}.bandwidth_mbps={d.bandwidth_mbps} must be > 0")
        check(d.latency_ms >= 0, f"{key}.latency_ms={d.latency_ms} must be >= 0")
    kinds = {d.kind for d in fleet.devices.values() if d.count > 0}
    check("cloud" in kinds, "offload.fleet has no cloud worker; give a class kind=cloud, "
                            "count >= 1")
    check("edge" in kinds, "offload.fleet has no edge device; give a class kind=edge, "
                           "count >= 1")
    check(fleet.queue_capacity >= 1,
          f"offload.fleet.queue_capacity={fleet.queue_capacity} must be >= 1")
    check(fleet.actor_num_cpus > 0,
          f"offload.fleet.actor_num_cpus={fleet.actor_num_cpus} must be > 0")

    wl = cfg.workload
    check(any(t.weight > 0 for t in wl.tasks.values()),
          "offload.workload.tasks has no kind with weight > 0; give one a positive weight")
    for name, m in wl.models.items():
        key = f"offload.workload.models.{name}"
        check(m.dataset in ZOO_DATASETS,
              f"{key}.dataset={m.dataset!r} must be one of {ZOO_DATASETS}")
        check(m.train_epochs >= 0, f"{key}.train_epochs={m.train_epochs} must be >= 0")
    for name, t in wl.tasks.items():
        key = f"offload.workload.tasks.{name}"
        check(t.model in wl.models, f"{key}.model={t.model!r} is not in "
                                    f"offload.workload.models {sorted(wl.models)}")
        check(t.op in TASK_OPS, f"{key}.op={t.op!r} must be one of {TASK_OPS}")
        check(t.batch_size >= 1, f"{key}.batch_size={t.batch_size} must be >= 1")
        check(t.weight >= 0, f"{key}.weight={t.weight} must be >= 0")
        check(t.deadline_ms > 0, f"{key}.deadline_ms={t.deadline_ms} must be > 0")
    crash = cfg.faults.crash_device
    if crash is not None:
        names = [device_name(cls, i) for cls, d in fleet.devices.items()
                 for i in range(d.count)]
        check(crash in names, f"offload.faults.crash_device={crash!r} is not a device; "
                              f"pick one of {names}")
        check(cfg.faults.crash_after_tasks >= 1,
              f"offload.faults.crash_after_tasks={cfg.faults.crash_after_tasks} must be >= 1")
    return p


def check_offload(cfg: OffloadConfig) -> OffloadConfig:
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
