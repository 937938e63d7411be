"""Device actors ask for the custom `edge`/`cloud` resource only where the cluster has it."""

from __future__ import annotations

from rayfed.offload.config import FleetConfig
from rayfed.offload.devices import _actor_options
from rayfed.offload.profiles import DeviceProfile


def profile(kind: str) -> DeviceProfile:
    return DeviceProfile(name=f"{kind}-0", kind=kind, device_class=kind, slowdown=1.0,
                         memory_bytes=1 << 20, bandwidth_mbps=1.0, latency_ms=0.0)


def test_custom_resource_when_present_else_plain_fractional_cpus():
    fleet = FleetConfig(actor_num_cpus=0.1, resource_per_actor=1.0, cloud_num_gpus=0.5)
    with_edge = _actor_options(profile("edge"), fleet, {"CPU": 2, "edge": 8})
    assert with_edge["resources"] == {"edge": 1.0} and with_edge["num_cpus"] == 0.1
    assert with_edge["max_restarts"] == 0  # a dead device stays dead; its tasks move
    laptop = _actor_options(profile("cloud"), fleet, {"CPU": 2})
    assert "resources" not in laptop and "num_gpus" not in laptop
    gpu = _actor_options(profile("cloud"), fleet, {"CPU": 2, "GPU": 1, "cloud": 2})
    assert gpu["resources"] == {"cloud": 1.0} and gpu["num_gpus"] == 0.5
