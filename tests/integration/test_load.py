"""Issue #9, load L1: 1,000 pooled participants under user-level DP, round after round.

Measured after every round: the summed proportional set size (PSS) of this
driver and every process it started (Ray's GCS, raylet and the actors), Ray's
object store (objects and bytes, from the raylets) and the object references this
driver holds. Asserted: memory does not grow (least-squares slope over the rounds
after the first two), the object store and the driver's references stay flat,
and no actor is left alive after the run.

CI runs 40 rounds: the issue's 20, whose slope is printed (it includes a
warm-up, see ``WARMUP_ROUNDS``), and 20 more, whose slope is asserted.
``RAYFED_L1_ROUNDS=N`` (N > 30) runs a longer soak:

    RAYFED_L1_ROUNDS=60 python -m pytest -q -s tests/integration/test_load.py

Round-to-round PSS varies by about ±8 MiB across Ray's processes, so a slope
over fewer than ~15 rounds is too noisy for the bound.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time

import numpy as np
import psutil
import pytest
import ray
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rayfed.config import register_configs, to_config
from rayfed.fl.orchestrator import Orchestrator
from tests.conftest import CONF

pytestmark = pytest.mark.usefixtures("ray_session")

L1_ROUNDS = int(os.environ.get("RAYFED_L1_ROUNDS", "40"))
# PSS can rise for about the first 20 rounds (+1.57 MB/round in 1 of 3 runs at
# load 9-27, +0.05 and +0.14 in the others) and is flat after that (rounds 21-60
# of that run: +0.01 MB/round); the slope is asserted after this warm-up.
# What rose (issue #18): every participant that had trained once carried a state
# blob ({"stages": {}}, ~320 B pickled) from then on, in the server's
# client_states, each checkpoint and each round's tasks and partial sums; with
# 100 of 1,000 drawn per round, 89% have been drawn by round 20 and 97% by round
# 30 (1 - 0.9^r), hence a rise that flattens. Stateless stages now carry nothing:
# rounds 3-20 +0.69 MB/round before, -0.61 after (one run each, load 3-5; PSS
# noise is ±10 MiB), and a tracemalloc diff of a host serving 100 a round over
# rounds 3-20 shows +0.01 MiB of Python heap.
WARMUP_ROUNDS = 20
# Keeping one update per participant and round would grow 100 x 38 KB (the
# 9,610-parameter MLP) = 3.8 MB per round; the bound is a quarter of that and
# 4x the slope's standard error over 20 rounds (~0.25 MB/round at ±8 MiB of
# round-to-round noise). A leak of one weight vector per round (38 KB) is below
# what PSS resolves; the object store and reference checks below catch those.
MAX_SLOPE_MB_PER_ROUND = 1.0


def pss_bytes() -> int:
    """PSS of this process and all its descendants (Ray's processes and actors)."""
    me = psutil.Process(os.getpid())
    total = 0
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_full_info().pss
    return total


def object_store() -> tuple[int, int]:
    """(objects, bytes) in the object store of every node, as the raylets report them.
    Ray's internal API: the public state API needs the dashboard, which tests skip."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    state = get_state_from_address(ray.get_runtime_context().gcs_address)
    stats = get_memory_info_reply(state).store_stats
    return int(stats.num_local_objects), int(stats.object_store_bytes_used)


def driver_refs() -> int:
    """Object references this driver's core worker holds (owned or borrowed)."""
    return len(ray._private.worker.global_worker.core_worker.get_all_reference_counts())


def alive_host_actors() -> int:
    return sum(1 for a in ray._private.state.actors().values()
               if a["State"] == "ALIVE" and a["ActorClassName"] == "HostActor")


def slope_mb_per_round(values: list[int]) -> float:
    x = np.arange(len(values), dtype=np.float64)
    return float(np.polyfit(x, np.asarray(values, dtype=np.float64) / 2**20, 1)[0])


def test_l1_1000_pooled_participants_with_dp_do_not_leak(tmp_path):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_config(compose("config", overrides=[
            "experiment=cross_device", "privacy=central_dp", f"fl.rounds={L1_ROUNDS}",
            "tracking.enabled=false", f"checkpoint.dir={tmp_path}"]))
    assert cfg.fl.num_clients == 1000 and cfg.runtime.placement == "pooled"
    actors_before = alive_host_actors()
    rows = []
    t0 = time.perf_counter()
    with Orchestrator(cfg) as orch:
        # Pooled actors build a participant's shard on first use and keep it; any
        # actor may serve any participant. Building all 1000 on every actor first
        # separates that bounded cache (measured here) from growth per round.
        pss_empty = pss_bytes()
        ray.get([a.shard_sizes.remote(list(range(cfg.fl.num_clients)))
                 for a in orch.placement.actors])
        cache_mb = (pss_bytes() - pss_empty) / 2**20
        for r in orch.rounds():
            gc.collect()
            objects, store_bytes = object_store()
            rows.append((r, pss_bytes(), objects, store_bytes, driver_refs()))
        epsilon = orch.summary()["epsilon"]
    wall_s = time.perf_counter() - t0
    # The actors are gone once the run is closed (kills are asynchronous: poll).
    deadline = time.monotonic() + 30
    while alive_host_actors() > actors_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive_host_actors() == actors_before

    assert [r.status for r, *_ in rows] == ["completed"] * L1_ROUNDS
    assert all(r.num_reported > 50 for r, *_ in rows)  # Poisson sampling, q = 0.1
    steady = rows[WARMUP_ROUNDS:]
    pss = [p for _, p, *_ in steady]
    slope = slope_mb_per_round(pss)
    objects = [o for _, _, o, _, _ in rows]
    store = [b for _, _, _, b, _ in rows]
    refs = [n for *_, n in rows]
    print(f"\nL1: {L1_ROUNDS} rounds, 1000 participants, central_dp (epsilon {epsilon:.3f}), "
          f"{wall_s:.1f}s; load {os.getloadavg()[0]:.1f}; all shards on all actors "
          f"{cache_mb:+.1f} MiB")
    for r, p, o, b, n in rows:
        print(f"  round {r.server_round:2d}: {r.num_reported:3d} reported, PSS "
              f"{p / 2**20:7.1f} MiB, store {o} objects / {b} B, driver refs {n}")
    first = slope_mb_per_round([p for _, p, *_ in rows[2:20]])
    print(f"  PSS slope over rounds 3-20: {first:+.3f} MB/round (warm-up, not asserted); "
          f"over rounds {WARMUP_ROUNDS + 1}-{L1_ROUNDS}: {slope:+.3f} MB/round")
    assert slope < MAX_SLOPE_MB_PER_ROUND, slope
    # Nothing accumulates in the object store or in the driver's reference table.
    # Ray frees a round's broadcast weights asynchronously, so a few rounds' copies
    # (0 to 3 seen on a quiet machine) may still be there when one is sampled; a
    # leak of one object per round would reach 40 here, and would show as a trend.
    weights_bytes = 4 * orch.weights.size + 1024
    assert max(objects) <= 5, objects
    assert np.mean(objects[-10:]) <= np.mean(objects[:10]) + 1, objects
    assert max(store) <= 5 * weights_bytes, store
    assert max(refs) - min(refs) <= 2, refs
