"""The scheduler actor on a real local Ray: every task completes, load drains to zero,
and the tasks of an edge device killed mid-stream are reassigned."""

from __future__ import annotations

import pytest

from rayfed.offload.config import (
    DeviceClassConfig,
    FleetConfig,
    OffloadConfig,
    OffloadFaultConfig,
    TaskKindConfig,
    WorkloadConfig,
    ZooModelConfig,
    check_offload,
)
from rayfed.offload.runner import OffloadRun

pytestmark = pytest.mark.usefixtures("ray_session")

NUM_TASKS = 30


def tiny_config(**faults) -> OffloadConfig:
    """Two edge devices and one cloud worker; light Linear models (int8 variants)."""
    fleet = FleetConfig(devices={
        "edge_fast": DeviceClassConfig(kind="edge", count=1, slowdown=100, bandwidth_mbps=50,
                                       latency_ms=5),
        "edge_slow": DeviceClassConfig(kind="edge", count=1, slowdown=400, bandwidth_mbps=5,
                                       latency_ms=20),
        "cloud": DeviceClassConfig(kind="cloud", count=1, slowdown=20, bandwidth_mbps=1000,
                                   latency_ms=2, memory_mb=4096),
    }, queue_capacity=4, actor_num_cpus=0.1)
    workload = WorkloadConfig(
        models={"logreg": ZooModelConfig(name="logreg", train_epochs=1),
                "mlp": ZooModelConfig(name="mlp", hidden_sizes=[256], train_epochs=1)},
        tasks={"logreg_infer": TaskKindConfig(model="logreg", batch_size=32, deadline_ms=100),
               "mlp_infer": TaskKindConfig(model="mlp", batch_size=128, deadline_ms=200),
               "mlp_train": TaskKindConfig(model="mlp", op="train", batch_size=32,
                                           deadline_ms=300)})
    return check_offload(OffloadConfig(
        policy="round_robin", num_tasks=NUM_TASKS, arrival_rate=100.0, calibration_runs=1,
        intake_capacity=4,
        max_accuracy_drop=1.0, fleet=fleet, workload=workload,
        faults=OffloadFaultConfig(**faults)))


@pytest.fixture(scope="module")
def runs():
    """A fleet whose edge_fast-0 dies on its 3rd task, under round robin."""
    with OffloadRun(tiny_config(crash_device="edge_fast-0", crash_after_tasks=3)) as run:
        tasks = run.stream()
        yield tasks, run.run_policy("round_robin", tasks)


def test_killed_edge_device_loses_no_task_and_reassignments_are_counted(runs):
    tasks, crashed = runs
    assert crashed.dead_devices == ("edge_fast-0",)
    assert sorted(r.task_id for r in crashed.records) == [t.task_id for t in tasks]
    # The task it died on, at least, ran again elsewhere; each retry is one attempt.
    assert crashed.reassignments >= 1
    assert sum(r.attempts - 1 for r in crashed.records) == crashed.reassignments
    retried = [r for r in crashed.records if r.attempts > 1]
    assert retried and all(r.device != "edge_fast-0" for r in retried)


def test_every_device_load_is_back_to_zero_after_the_stream(runs):
    _, crashed = runs
    # The dead device's load was dropped when it died; the others' drained task by task.
    assert crashed.outstanding == {"edge_fast-0": (0, 0), "edge_slow-0": (0, 0),
                                   "cloud-0": (0, 0)}
    assert len(crashed.decision_s) == NUM_TASKS


def test_queues_and_intake_stay_bounded(runs):
    _, crashed = runs
    assert 1 <= max(crashed.peak_queue.values()) <= 4  # fleet.queue_capacity
    assert 1 <= crashed.max_intake <= 4  # offload.intake_capacity
