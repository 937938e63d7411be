"""Every policy, called with hand-made estimates and no cluster."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rayfed.offload.cost import Estimate
from rayfed.offload.policies import POLICIES, get_policy
from rayfed.offload.tasks import Task, TaskKind


def est(device: str, finish_s: float, *, kind: str = "edge", variant: str = "fp32",
        room: bool = True, origin: bool = False, moved: int = 0, energy: float = 0.0,
        outstanding: float = 0.0) -> Estimate:
    return Estimate(device=device, kind=kind, variant=variant, wait_s=outstanding,
                    compute_s=0.1, transfer_in_s=0.0, transfer_out_s=0.0, finish_s=finish_s,
                    bytes_moved=moved, energy_j=energy, accuracy=0.9, has_room=room,
                    is_origin=origin, outstanding_s=outstanding)


def make_task(complexity: float = 0.2, deadline_s: float = 1.0, task_id: int = 0) -> Task:
    k = TaskKind(name="k", model="m", op="infer", batch_size=1, flops=1, input_bytes=1,
                 output_bytes=1, model_bytes=1, deadline_s=deadline_s, complexity=complexity,
                 accuracy={"fp32": 0.9})
    return Task(task_id=task_id, kind=k, origin="e0", arrival_s=0.0, deadline_s=deadline_s,
                batch_start=0)


FLEET = [
    est("e0", 0.9, origin=True, energy=0.5),
    est("e0", 0.6, variant="int8", origin=True, energy=0.5),
    est("e1", 0.7, moved=100),
    est("c0", 0.5, kind="cloud", moved=100, outstanding=0.4),
    est("c1", 0.4, kind="cloud", moved=100, outstanding=0.2),
]


def test_greedy_eft_picks_the_earliest_predicted_finish():
    p = get_policy("greedy_eft")(make_task(), FLEET)
    assert (p.device, p.variant, p.policy) == ("c1", "fp32", "greedy_eft")
    full = [replace(e, has_room=False) if e.device == "c1" else e for e in FLEET]
    assert get_policy("greedy_eft")(make_task(), full).device == "c0"


def test_threshold_keeps_light_tasks_local_and_sends_heavy_ones_to_the_cloud():
    light = get_policy("threshold")(make_task(complexity=0.5), FLEET, threshold=0.5)
    assert (light.device, light.variant) == ("e0", "fp32")
    heavy = get_policy("threshold")(make_task(complexity=0.51), FLEET, threshold=0.5)
    assert heavy.device == "c1"  # the least-loaded cloud worker


def test_deadline_aware_moves_the_fewest_bytes_among_on_time_placements():
    # e0 (fp32 0.9, int8 0.6) meets 1.0 s and moves nothing; int8 finishes first.
    p = get_policy("deadline_aware")(make_task(deadline_s=1.0), FLEET)
    assert (p.device, p.variant) == ("e0", "int8")
    # With a 0.65 s deadline only e0/int8, c0 and c1 are on time; e0 moves nothing.
    assert get_policy("deadline_aware")(make_task(deadline_s=0.65), FLEET).device == "e0"
    # Nothing meets 0.3 s: least lateness.
    assert get_policy("deadline_aware")(make_task(deadline_s=0.3), FLEET).device == "c1"


def test_baselines():
    assert get_policy("all_edge")(make_task(), FLEET).device == "e0"
    assert get_policy("all_cloud")(make_task(), FLEET).device == "c1"
    devices = [get_policy("round_robin")(make_task(task_id=i), FLEET).device for i in range(4)]
    assert devices == ["c0", "c1", "e0", "e1"]
    draws = [get_policy("random")(make_task(task_id=i), FLEET, seed=3).device for i in range(40)]
    assert set(draws) == {"c0", "c1", "e0", "e1"}
    assert draws == [get_policy("random")(make_task(task_id=i), FLEET, seed=3).device
                     for i in range(40)]


def test_all_edge_uses_another_edge_when_the_origin_died():
    alive = [e for e in FLEET if e.device != "e0"]
    assert get_policy("all_edge")(make_task(), alive).device == "e1"


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_holds_the_task_when_no_queue_has_room(name):
    full = [replace(e, has_room=False) for e in FLEET]
    assert POLICIES[name](make_task(complexity=0.9), full, threshold=0.5, seed=0) is None


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_returns_a_frozen_placement_on_a_live_device(name):
    p = POLICIES[name](make_task(), FLEET, threshold=0.5, seed=0)
    assert p is not None and p.task_id == 0 and p.estimate.has_room
    with pytest.raises(AttributeError):
        p.device = "elsewhere"  # type: ignore[misc]


def test_unknown_policy_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"offload.policy='fastest'.*greedy_eft"):
        get_policy("fastest")
