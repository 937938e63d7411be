"""Live load: added on dispatch, removed on completion, cleared when a device dies."""

from __future__ import annotations

from rayfed.offload.cost import LoadLedger
from rayfed.offload.profiles import DeviceProfile


def profile(name: str) -> DeviceProfile:
    return DeviceProfile(name=name, kind="edge", device_class="e", slowdown=1.0,
                         memory_bytes=1 << 20, bandwidth_mbps=1.0, latency_ms=0.0)


def test_load_returns_to_exactly_zero_after_every_completion():
    ledger = LoadLedger([profile("a"), profile("b")], capacity=2)
    times = [0.1, 0.2, 0.3, 0.7, 1e-9]
    for i, t in enumerate(times):
        ledger.add("a", i, t)
    a = ledger.snapshot()[0]
    assert a.outstanding_tasks == 5 and abs(a.outstanding_s - sum(times)) < 1e-12
    assert not a.has_room  # capacity 2
    assert ledger.peak == {"a": 5, "b": 0}
    for i in (3, 0, 4, 1, 2):
        ledger.remove("a", i)
    assert ledger.outstanding() == {"a": (0, 0), "b": (0, 0)}


def test_a_dead_device_has_no_load_and_no_room():
    ledger = LoadLedger([profile("a"), profile("b")], capacity=4)
    ledger.add("b", 1, 0.5)
    ledger.kill("b")
    ledger.remove("b", 1)  # the failed task's own report comes later: harmless
    b = ledger.snapshot()[1]
    assert (b.alive, b.has_room, b.outstanding_tasks, b.outstanding_s) == (False, False, 0, 0)
    assert ledger.total_tasks() == 0
