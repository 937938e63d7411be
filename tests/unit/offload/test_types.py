"""The names the schema checks against are the names the implementations use."""

from __future__ import annotations

from rayfed.offload.config import DeviceClassConfig, FleetConfig, OffloadConfig, validate
from rayfed.offload.policies import POLICIES
from rayfed.offload.profiles import device_names
from rayfed.offload.types import POLICY_NAMES


def test_policy_names_are_the_registered_policies_in_run_order():
    assert tuple(POLICIES) == POLICY_NAMES


def test_crash_device_check_accepts_exactly_the_fleets_device_names():
    fleet = FleetConfig(devices={"edge_slow": DeviceClassConfig(kind="edge", count=2),
                                 "cloud": DeviceClassConfig(kind="cloud", count=1)})
    assert device_names(fleet) == ["edge_slow-0", "edge_slow-1", "cloud-0"]
    for name in device_names(fleet):
        cfg = OffloadConfig(fleet=fleet)
        cfg.faults.crash_device = name
        assert not [p for p in validate(cfg) if "crash_device" in p]
    cfg = OffloadConfig(fleet=fleet)
    cfg.faults.crash_device = "edge_slow-2"
    (problem,) = [p for p in validate(cfg) if "crash_device" in p]
    assert "edge_slow-2" in problem and "cloud-0" in problem
