"""The completion-time model, checked against values computed by hand."""

from __future__ import annotations

import pytest

from rayfed.offload.cost import DeviceLoad, RateTable, candidates, ewma, predict, variants_for
from rayfed.offload.profiles import DeviceProfile, transfer_s
from rayfed.offload.tasks import Task, TaskKind

EDGE = DeviceProfile(name="edge-0", kind="edge", device_class="edge", slowdown=100.0,
                     memory_bytes=1 << 20, bandwidth_mbps=8.0, latency_ms=20.0,
                     energy_nj_per_flop=2.0, allow_int8=True)
CLOUD = DeviceProfile(name="cloud-0", kind="cloud", device_class="cloud", slowdown=10.0,
                      memory_bytes=1 << 30, bandwidth_mbps=1000.0, latency_ms=5.0)


def kind(**kw) -> TaskKind:
    base = dict(name="k", model="m", op="infer", batch_size=8, flops=1_000_000,
                input_bytes=10_000, output_bytes=1_000, model_bytes=1_000, deadline_s=1.0,
                complexity=0.5, accuracy={"fp32": 0.9, "int8": 0.895})
    base.update(kw)
    return TaskKind(**base)


def task(**kw) -> Task:
    return Task(task_id=0, kind=kind(**kw), origin="edge-0", arrival_s=0.0, deadline_s=1.0,
                batch_start=0)


def test_transfer_is_both_latencies_plus_bytes_over_the_slower_link():
    # 10_000 B over min(8, 1000) Mbps = 1 MB/s -> 10 ms; latencies 20 + 5 ms.
    assert transfer_s(10_000, EDGE, CLOUD) == pytest.approx(0.035)
    assert transfer_s(10_000, EDGE, EDGE) == 0.0


def test_local_finish_is_now_plus_wait_plus_compute():
    load = DeviceLoad(profile=EDGE, outstanding_s=0.3, outstanding_tasks=2)
    e = predict(task(), load, EDGE, variant="fp32", rate_flops_per_s=1e7, now_s=2.0)
    # 1e6 FLOPs at 1e7 FLOP/s = 0.1 s; no transfer on the task's own device.
    assert e.compute_s == pytest.approx(0.1)
    assert e.finish_s == pytest.approx(2.0 + 0.3 + 0.1)
    assert e.bytes_moved == 0 and e.is_origin
    assert e.energy_j == pytest.approx(1e6 * 2e-9)


def test_offloaded_finish_overlaps_input_transfer_with_the_queue():
    t_in = 0.025 + 10_000 / 1e6   # 35 ms
    t_out = 0.025 + 1_000 / 1e6   # 26 ms
    idle = predict(task(), DeviceLoad(profile=CLOUD), EDGE, variant="fp32",
                   rate_flops_per_s=1e8, now_s=0.0)
    assert idle.finish_s == pytest.approx(t_in + 0.01 + t_out)
    busy = predict(task(), DeviceLoad(profile=CLOUD, outstanding_s=0.5), EDGE,
                   variant="fp32", rate_flops_per_s=1e8, now_s=0.0)
    assert busy.finish_s == pytest.approx(0.5 + 0.01 + t_out)
    assert busy.bytes_moved == 11_000 and not busy.is_origin


def test_int8_is_a_candidate_only_on_edges_and_within_the_accuracy_budget():
    assert variants_for(task(), EDGE, max_accuracy_drop=0.01) == ["fp32", "int8"]
    assert variants_for(task(), EDGE, max_accuracy_drop=0.001) == ["fp32"]
    assert variants_for(task(), CLOUD, max_accuracy_drop=1.0) == ["fp32"]


def test_candidates_skip_dead_devices_and_devices_without_memory():
    rates = {("edge-0", "k:fp32"): 1e7, ("edge-0", "k:int8"): 2e7, ("cloud-0", "k:fp32"): 1e8}
    loads = [DeviceLoad(profile=EDGE), DeviceLoad(profile=CLOUD)]
    est = candidates(task(), loads, EDGE, rates, now_s=0.0, max_accuracy_drop=0.01)
    assert [(e.device, e.variant) for e in est] == [
        ("edge-0", "fp32"), ("edge-0", "int8"), ("cloud-0", "fp32")]
    assert est[1].compute_s == pytest.approx(0.05) and est[1].accuracy == 0.895
    dead = [DeviceLoad(profile=EDGE), DeviceLoad(profile=CLOUD, alive=False)]
    assert {e.device for e in candidates(task(), dead, EDGE, rates, now_s=0.0,
                                         max_accuracy_drop=0.01)} == {"edge-0"}
    big = task(model_bytes=2 << 20)  # more than the edge's 1 MiB
    assert {e.device for e in candidates(big, loads, EDGE, rates, now_s=0.0,
                                         max_accuracy_drop=0.01)} == {"cloud-0"}


def test_queue_is_full_at_capacity():
    assert DeviceLoad(profile=EDGE, outstanding_tasks=7, capacity=8).has_room
    assert not DeviceLoad(profile=EDGE, outstanding_tasks=8, capacity=8).has_room
    assert not DeviceLoad(profile=EDGE, alive=False).has_room


def test_rates_start_at_the_calibration_median_then_follow_an_ewma():
    assert ewma(10.0, 20.0, alpha=0.25) == pytest.approx(12.5)
    table = RateTable(alpha=0.5)
    table.calibrate("d", "k:fp32", flops=100, seconds=[1.0, 0.5, 4.0])  # median 1.0 s
    assert table.rates[("d", "k:fp32")] == pytest.approx(100.0)
    table.observe("d", "k:fp32", flops=100, seconds=0.5)  # 200 FLOP/s measured
    assert table.rates[("d", "k:fp32")] == pytest.approx(150.0)
    copy = table.copy()
    copy.observe("d", "k:fp32", flops=100, seconds=0.1)
    assert table.rates[("d", "k:fp32")] == pytest.approx(150.0)
