"""Offload config: every problem reported at once, each naming its key."""

from __future__ import annotations

import pytest

from rayfed.errors import ConfigError
from rayfed.offload.config import (
    DeviceClassConfig,
    FleetConfig,
    OffloadConfig,
    OffloadFaultConfig,
    TaskKindConfig,
    WorkloadConfig,
    ZooModelConfig,
    check_offload,
    validate,
)
from rayfed.offload.profiles import fleet_profiles


def good() -> OffloadConfig:
    return OffloadConfig(
        fleet=FleetConfig(devices={"e": DeviceClassConfig(kind="edge", count=2),
                                   "c": DeviceClassConfig(kind="cloud", count=1)}),
        workload=WorkloadConfig(models={"m": ZooModelConfig()},
                                tasks={"t": TaskKindConfig(model="m")}))


def test_a_good_config_has_no_problems_and_names_devices_by_class():
    assert validate(good()) == []
    assert [p.name for p in fleet_profiles(good().fleet)] == ["e-0", "e-1", "c-0"]
    assert [p.allow_int8 for p in fleet_profiles(good().fleet)] == [True, True, False]


def test_every_problem_is_reported_with_its_key():
    cfg = good()
    cfg.policy = "fastest"
    cfg.arrival_rate = 0
    cfg.fleet.devices["c"].count = 0
    cfg.fleet.devices["e"].bandwidth_mbps = -1
    cfg.workload.tasks["t"] = TaskKindConfig(model="nope", op="fit")
    cfg.faults = OffloadFaultConfig(crash_device="e-7")
    with pytest.raises(ConfigError) as err:
        check_offload(cfg)
    text = "\n".join(err.value.problems)
    for key in ("offload.policy='fastest'", "offload.arrival_rate=0",
                "offload.fleet has no cloud worker", "devices.e.bandwidth_mbps=-1",
                "tasks.t.model='nope'", "tasks.t.op='fit'", "crash_device='e-7'"):
        assert key in text
    assert len(err.value.problems) == 7
