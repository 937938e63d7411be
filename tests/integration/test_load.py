"""Issue #9, load L1: 1,000 pooled participants under user-level DP, round after round.

Measured after every round, over this driver and every process it started (Ray's
GCS, raylet, agents and the actors): the memory they allocate, i.e. the anonymous
and shared-memory parts of their proportional set size (``Pss_Anon + Pss_Shmem``
from ``/proc/<pid>/smaps_rollup``: heaps, and Ray's object store in ``/dev/shm``);
Ray's object store (objects and bytes, from the raylets) and the object references
this driver holds. Asserted: that memory does not grow (least-squares slope over
every round after the first two), the object store and the driver's references
stay flat, and no actor is left alive after the run.

Why not the whole PSS (issue #18): its file-backed part, the pages of the shared
libraries (libpython, torch, numpy, Ray's ``_raylet.so``), is divided among every
process on the machine that maps them, so it moves when *another* job starts or
ends: three idle ``import torch, ray`` processes ended after round 12 raise this
run's file-backed PSS by 21.5 MiB at once, a slope of +1.8 MB/round over rounds
3-20 with nothing of ours growing (``python -m benchmarks.l1_memory
--neighbours-until 12 --neighbours 3``). The whole PSS and its file-backed part
are still printed.

CI runs 40 rounds; ``RAYFED_L1_ROUNDS=N`` (N > 30) runs a longer soak:

    RAYFED_L1_ROUNDS=60 python -m pytest -q -s tests/integration/test_load.py

Round-to-round, the allocated memory varies by about ±8 MiB (mostly the actors'
heaps), so a slope over fewer than ~30 rounds is too noisy for the bound.
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
# The slope is asserted from round 3 on: no warm-up is excluded. The whole PSS
# used to be asserted, after a 20-round warm-up, because it could rise by
# +1.2-1.6 MB/round over rounds 3-20 and then stay flat. That rise was its
# file-backed part (see the module docstring): in the run that reproduced it
# (+1.58 MB/round over rounds 3-20, -0.46 over 21-60), file-backed +1.89 and
# allocated -0.32. The allocated memory over rounds 3-40, in 5 runs of 40
# rounds at load 2-4: -0.06 to +0.41 MB/round (benchmarks/l1_memory.py). One real
# per-round growth was found and removed on the way (issue #18): every participant
# ever drawn carried a ~320 B state blob; stateless stages now carry nothing.
FIRST_ROUND = 2  # index: rounds 1-2 are left out (the actors' first allocations)
# Keeping one update per participant and round would grow 100 x 38 KB (the
# 9,610-parameter MLP) = 3.8 MB per round; the bound is a quarter of that and
# 8x the slope's standard error over 38 rounds (~0.12 MB/round at ±8 MiB of
# round-to-round noise). A leak of one weight vector per round (38 KB) is below
# what PSS resolves; the object store and reference checks below catch those.
MAX_SLOPE_MB_PER_ROUND = 1.0


def smaps_rollup(pid: int) -> dict[str, int]:
    """The fields of ``/proc/<pid>/smaps_rollup``, in bytes."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        lines = f.read().splitlines()[1:]
    for line in lines:
        key, value, *_ = line.split()
        out[key.rstrip(":")] = int(value) * 1024
    # A process that has exited but is not yet reaped has an empty rollup.
    if out and "Pss_Anon" not in out:
        raise RuntimeError(f"/proc/{pid}/smaps_rollup has no Pss_Anon: this test needs a "
                           "Linux kernel that splits PSS into Pss_Anon/Pss_File/Pss_Shmem")
    return out


def tree_memory() -> tuple[int, int, int]:
    """(allocated, file-backed, whole) PSS in bytes of this process and all its
    descendants (Ray's processes and actors); allocated = ``Pss_Anon + Pss_Shmem``."""
    me = psutil.Process(os.getpid())
    allocated = file_backed = whole = 0
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            fields = smaps_rollup(p.pid)
            if not fields:
                continue
            allocated += fields["Pss_Anon"] + fields["Pss_Shmem"]
            file_backed += fields["Pss_File"]
            whole += fields["Pss"]
    return allocated, file_backed, whole


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
        empty = tree_memory()[0]
        ray.get([a.shard_sizes.remote(list(range(cfg.fl.num_clients)))
                 for a in orch.placement.actors])
        cache_mb = (tree_memory()[0] - empty) / 2**20
        for r in orch.rounds():
            gc.collect()
            objects, store_bytes = object_store()
            rows.append((r, tree_memory(), objects, store_bytes, driver_refs()))
        epsilon = orch.summary()["epsilon"]
    wall_s = time.perf_counter() - t0
    # The actors are gone once the run is closed (kills are asynchronous: poll).
    deadline = time.monotonic() + 30
    while alive_host_actors() > actors_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive_host_actors() == actors_before

    assert [r.status for r, *_ in rows] == ["completed"] * L1_ROUNDS
    assert all(r.num_reported > 50 for r, *_ in rows)  # Poisson sampling, q = 0.1
    allocated = [m[0] for _, m, *_ in rows]
    file_backed = [m[1] for _, m, *_ in rows]
    whole = [m[2] for _, m, *_ in rows]
    slope = slope_mb_per_round(allocated[FIRST_ROUND:])
    objects = [o for _, _, o, _, _ in rows]
    store = [b for _, _, _, b, _ in rows]
    refs = [n for *_, n in rows]
    print(f"\nL1: {L1_ROUNDS} rounds, 1000 participants, central_dp (epsilon {epsilon:.3f}), "
          f"{wall_s:.1f}s; load {os.getloadavg()[0]:.1f}; all shards on all actors "
          f"{cache_mb:+.1f} MiB")
    for r, (a, f, w), o, b, n in rows:
        print(f"  round {r.server_round:2d}: {r.num_reported:3d} reported, PSS allocated "
              f"{a / 2**20:7.1f} MiB (file-backed {f / 2**20:6.1f}, whole {w / 2**20:7.1f}), "
              f"store {o} objects / {b} B, driver refs {n}")
    print(f"  allocated PSS slope over rounds {FIRST_ROUND + 1}-{L1_ROUNDS}: {slope:+.3f} "
          "MB/round (asserted); over rounds 3-20: "
          f"{slope_mb_per_round(allocated[2:20]):+.3f}, file-backed "
          f"{slope_mb_per_round(file_backed[2:20]):+.3f}, whole "
          f"{slope_mb_per_round(whole[2:20]):+.3f}")
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
