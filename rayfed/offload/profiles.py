"""Device profiles and the link model of an emulated edge/cloud fleet.

Every device hangs off a network core by one link (bandwidth, latency). Moving
``payload_bytes`` from device ``a`` to device ``b`` costs both links' latencies
plus the bytes over the slower link, the usual store-and-forward first-order
model (e.g. Kurose & Ross, ch. 1.4); a task run where it arose moves nothing.

A profile's ``slowdown`` is how the fleet is emulated on one machine: a device's
compute time is the measured CPU time of the real work multiplied by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayfed.offload.config import FleetConfig
from rayfed.offload.types import DeviceKind, device_name


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    kind: DeviceKind
    device_class: str
    slowdown: float
    memory_bytes: int
    bandwidth_mbps: float
    latency_ms: float
    energy_nj_per_flop: float | None = None
    allow_int8: bool = False


def fleet_profiles(fleet: FleetConfig) -> tuple[DeviceProfile, ...]:
    """One profile per device, named ``<class>-<i>``, in the config's class order."""
    out: list[DeviceProfile] = []
    for cls, d in fleet.devices.items():
        for i in range(d.count):
            out.append(DeviceProfile(
                name=device_name(cls, i), kind=d.kind,  # type: ignore[arg-type]
                device_class=cls, slowdown=d.slowdown,
                memory_bytes=int(d.memory_mb * 2**20), bandwidth_mbps=d.bandwidth_mbps,
                latency_ms=d.latency_ms, energy_nj_per_flop=d.energy_nj_per_flop,
                # int8 variants are an edge-side trade of accuracy for speed.
                allow_int8=d.allow_int8 and d.kind == "edge"))
    return tuple(out)


def device_names(fleet: FleetConfig) -> list[str]:
    return [p.name for p in fleet_profiles(fleet)]


def transfer_s(payload_bytes: int, src: DeviceProfile, dst: DeviceProfile) -> float:
    """Seconds to move ``payload_bytes`` from ``src`` to ``dst`` (0 on the same device)."""
    if src.name == dst.name:
        return 0.0
    bottleneck_bps = min(src.bandwidth_mbps, dst.bandwidth_mbps) * 1e6 / 8
    return (src.latency_ms + dst.latency_ms) / 1e3 + payload_bytes / bottleneck_bps
