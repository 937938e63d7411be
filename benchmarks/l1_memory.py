"""Per-process memory over the rounds of load test L1 (issue #18).

The L1 test (``tests/integration/test_load.py``) sums the proportional set size
(PSS) of the driver and every process it started; that sum rose by ~1.2 MB per
round over rounds 3-20 and was flat afterwards. This runs the same workload
(``experiment=cross_device privacy=central_dp``: 1,000 participants, ~100 a round
by Poisson sampling, 2 pooled actors, every shard built on both actors first) and
records, after every round, each process's PSS split as the kernel reports it in
``/proc/<pid>/smaps_rollup``: anonymous memory (heaps), file-backed pages
(libraries, mapped files) and shared memory (Ray's object store, a ``/dev/shm``
mapping). It prints, per process, the least-squares slope over rounds 3-20 and
over the rounds after, so the growth can be pinned on one process and one kind
of page.

A row ``(outside the tree)`` sums every other process on the machine: when one of
them that maps the same libraries starts or ends, the file-backed PSS of ours moves.

    python -m benchmarks.l1_memory --rounds 40                  # ~30 s on 2 cores
    python -m benchmarks.l1_memory --env RAY_enable_task_events=0
    python -m benchmarks.l1_memory --rounds 30 --neighbours-until 12 --neighbours 3
    python -m benchmarks.l1_memory --malloc-trim --json samples.json

``--env KEY=VALUE`` is set before Ray starts, so Ray's processes inherit it.
``--neighbours-until R`` runs idle ``import torch, ray`` processes (not counted in
the tree) from before Ray starts until after round R. Not part of ``python -m
benchmarks``: it is a diagnosis, its numbers go to docs/reliability.md (L1).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")
OUTSIDE = "(outside the tree)"


def label(p: psutil.Process, driver_pid: int) -> str:
    """A stable name for one of Ray's processes (the pid changes run to run)."""
    if p.pid == driver_pid:
        return "driver"
    cmd = " ".join(p.cmdline())
    for needle, name in (("gcs_server", "gcs_server"), ("raylet", "raylet"),
                         ("dashboard/agent.py", "dashboard_agent"),
                         ("runtime_env/agent", "runtime_env_agent"),
                         ("log_monitor", "log_monitor"), ("monitor.py", "monitor"),
                         ("dashboard.py", "dashboard")):
        if needle in cmd:
            return name
    return cmd.split()[0] if cmd.startswith("ray::") else p.name()


def smaps(pid: int) -> dict[str, int]:
    """The PSS fields of ``/proc/<pid>/smaps_rollup``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        if key.rstrip(":") in FIELDS:
            out[key.rstrip(":")] = int(value) * 1024
    return out


def sample(driver_pid: int, exclude: set[int]) -> dict[str, dict[str, int]]:
    """PSS fields of the driver and each descendant, keyed by label (``#pid`` on clashes),
    and, under ``outside``, the summed fields of every other process on the machine
    (the ones in ``exclude`` included), which share library pages with ours."""
    me = psutil.Process(driver_pid)
    rows: dict[str, dict[str, int]] = {}
    tree = [p for p in [me, *me.children(recursive=True)] if p.pid not in exclude]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
            name = label(p, driver_pid)
            rows[name if name not in rows else f"{name}#{p.pid}"] = smaps(p.pid)
    outside = dict.fromkeys(FIELDS, 0)
    ours = {p.pid for p in tree}
    for pid in psutil.pids():
        if pid not in ours:
            with contextlib.suppress(OSError, ValueError):
                for key, value in smaps(pid).items():
                    outside[key] += value
    rows[OUTSIDE] = outside
    return rows


def slope_mb(values: list[int]) -> float:
    x = np.arange(len(values), dtype=np.float64)
    return float(np.polyfit(x, np.asarray(values, dtype=np.float64) / 2**20, 1)[0])


NEIGHBOUR = ("import sys, numpy, torch, ray; torch.nn.Linear(64, 10)(torch.ones(1, 64)).sum()"
             ".backward(); print('ready', flush=True); sys.stdin.read()")


def neighbours(n: int) -> list[subprocess.Popen[str]]:
    """``n`` idle Python processes that import what Ray's processes and the actors map
    (numpy, torch, Ray's ``_raylet.so``), as another user's job on the machine would.
    Each holds until its stdin closes."""
    procs = [subprocess.Popen([sys.executable, "-c", NEIGHBOUR], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:
        if p.stdout is None or p.stdout.readline().strip() != "ready":
            raise RuntimeError("a neighbour process did not start")
    return procs


def run(rounds: int, trim: bool, neighbours_until: int, n_neighbours: int
        ) -> list[dict[str, dict[str, int]]]:
    import ray
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rayfed.config import register_configs, to_config
    from rayfed.fl.orchestrator import Orchestrator

    others = neighbours(n_neighbours if neighbours_until else 0)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    register_configs()
    GlobalHydra.instance().clear()
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = to_config(compose("config", overrides=[
                "experiment=cross_device", "privacy=central_dp", f"fl.rounds={rounds}",
                "tracking.enabled=false", f"checkpoint.dir={tmp}"]))
        with Orchestrator(cfg) as orch:
            ray.get([a.shard_sizes.remote(list(range(cfg.fl.num_clients)))
                     for a in orch.placement.actors])
            for _ in orch.rounds():
                gc.collect()
                if trim:
                    # glibc: hand the driver's free heap pages back to the kernel.
                    import ctypes
                    ctypes.CDLL("libc.so.6").malloc_trim(0)
                samples.append(sample(os.getpid(), {p.pid for p in others}))
                if len(samples) == neighbours_until:
                    for p in others:
                        p.communicate("")
    ray.shutdown()
    return samples


def table(samples: list[dict[str, dict[str, int]]], early: tuple[int, int]) -> str:
    names = sorted({n for s in samples for n in s},
                   key=lambda n: -samples[-1].get(n, {}).get("Pss", 0))
    lo, hi = early
    lines = [f"{'process':24s} {'PSS r3':>8s} {'PSS end':>8s}  "
             + "  ".join(f"{f + ' ' + w:>20s}" for w in (f"r{lo+1}-{hi}", f"r{hi+1}-{len(samples)}")
                         for f in FIELDS)]
    for name in [*names, "TOTAL"]:
        def series(field: str, n: str = name) -> list[int]:
            if n == "TOTAL":
                return [sum(v.get(field, 0) for k, v in s.items() if k != OUTSIDE)
                        for s in samples]
            return [s.get(n, {}).get(field, 0) for s in samples]
        pss = series("Pss")
        cells = [f"{slope_mb(series(f)[lo:hi]):+20.3f}" for f in FIELDS]
        if len(samples) > hi + 2:
            cells += [f"{slope_mb(series(f)[hi:]):+20.3f}" for f in FIELDS]
        lines.append(f"{name:24s} {pss[lo] / 2**20:8.1f} {pss[-1] / 2**20:8.1f}  "
                     + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--malloc-trim", action="store_true",
                    help="malloc_trim(0) in the driver after every round")
    ap.add_argument("--neighbours-until", type=int, default=0, metavar="ROUND",
                    help="run idle processes that map the same libraries from the start "
                         "until after this round")
    ap.add_argument("--neighbours", type=int, default=2, help="how many (default 2)")
    ap.add_argument("--json", type=Path, help="write every sample here")
    args = ap.parse_args(argv)
    for kv in args.env:
        key, _, value = kv.partition("=")
        os.environ[key] = value
    t0 = time.perf_counter()
    samples = run(args.rounds, args.malloc_trim, args.neighbours_until, args.neighbours)
    print(f"L1 per process: {args.rounds} rounds, env {args.env or 'default'}, "
          f"neighbours until round {args.neighbours_until}, "
          f"{time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}; "
          "slopes in MB/round")
    print(table(samples, (2, 20)))
    if args.json:
        args.json.write_text(json.dumps(samples))
    return {"samples": samples, "rounds": args.rounds, "env": args.env,
            "neighbours_until": args.neighbours_until, "load_at_end": os.getloadavg()[0]}


def report(result: dict[str, Any]) -> str:
    """The per-process table for benchmarks/RESULTS.md."""
    return "\n".join([
        f"L1 workload (`experiment=cross_device privacy=central_dp`, 2 pooled actors), "
        f"{result['rounds']} rounds; PSS per process split into anonymous (allocated), "
        "file-backed (shared libraries, divided among every process mapping them) and "
        "shared memory; slopes in MB/round over rounds 3-20 and after. The rounds 3-20 "
        "rise of whole PSS is the file-backed part moving with other processes on the "
        "machine; the allocated part is what rayfed's processes hold (docs/reliability.md, "
        f"L1). Load at the end: {result['load_at_end']:.1f}.",
        "", "```", table(result["samples"], (2, 20)), "```"])


if __name__ == "__main__":
    main(sys.argv[1:])
