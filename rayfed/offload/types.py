"""Names the offloading package shares, at the bottom of its import graph.

The schema (:mod:`rayfed.offload.config`) checks choices against these, and the
modules that implement the choices (profiles, policies) use them, so that the
schema imports nothing above it: ``config`` → ``types`` only.
"""

from __future__ import annotations

from typing import Literal

DeviceKind = Literal["edge", "cloud"]
DEVICE_KINDS: tuple[DeviceKind, ...] = ("edge", "cloud")
TASK_OPS = ("infer", "train")
ZOO_DATASETS = ("digits", "mnist1d")
# The keys of rayfed.offload.policies.POLICIES, in the order a run with
# offload.policy=all runs them (a unit test keeps the two equal).
POLICY_NAMES = ("threshold", "greedy_eft", "deadline_aware", "all_edge", "all_cloud",
                "round_robin", "random")


def device_name(device_class: str, index: int) -> str:
    """The name of the ``index``-th device of a class: ``edge_slow-0``."""
    return f"{device_class}-{index}"
