"""Scheduler decision overhead per task: ``python -m benchmarks.offload_decision``.

One decision is what the scheduler actor does per task before dispatching it:
snapshot the live load of every device, estimate every (device, variant) with
the cost model, and call the policy. This runs exactly that code
(:meth:`Scheduler._decide`'s parts) on the default fleet (10 devices) and the
default workload's task kinds (FLOPs and bytes counted on the real models),
with every queue partly full, for each policy over a 1,000-task stream.

Reported: median and p99 microseconds per decision per policy. Issue 6 asks for
a median of at most 1 ms; run as a script, it exits with status 1 if a policy
misses it. ``main(argv) -> dict`` and ``report(dict) -> str`` follow the
``python -m benchmarks`` harness.
No Ray is started: the decision is pure, and Ray's own dispatch cost is not
part of it (the job's ``summary.json`` also reports the decision time measured
inside the live scheduler actor, ``decision_us_p50``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rayfed.offload.cost import LoadLedger, RateTable, candidates, rate_key, variants_for
from rayfed.offload.policies import POLICIES
from rayfed.offload.profiles import fleet_profiles
from rayfed.offload.tasks import describe_kinds, make_stream
from rayfed.offload.zoo import build_zoo

CONF = Path(__file__).resolve().parents[1] / "conf"
HOST_FLOPS = 2e10  # a nominal host rate; only the *time to decide* is measured


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="200 decisions per policy")
    parser.add_argument("--budget-us", type=float, default=1000.0)
    args = parser.parse_args(argv)
    num_tasks = 200 if args.quick else args.tasks

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rayfed.offload.config import register_offload_configs, to_offload_config

    register_offload_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_offload_config(compose(config_name="offload_job")).offload
    for model in cfg.workload.models.values():
        model.train_epochs = 0  # weights do not change FLOPs or bytes
    profiles = fleet_profiles(cfg.fleet)
    kinds = describe_kinds(cfg.workload, build_zoo(cfg.workload, seed=0))
    names = list(cfg.workload.tasks)
    tasks = make_stream([kinds[n] for n in names], [cfg.workload.tasks[n].weight for n in names],
                        [p.name for p in profiles if p.kind == "edge"],
                        num_tasks=num_tasks, arrival_rate=cfg.arrival_rate,
                        rng=np.random.default_rng(0))
    rates = RateTable(alpha=cfg.ewma_alpha)
    for p in profiles:
        for t in tasks[:50]:
            for v in variants_for(t, p, max_accuracy_drop=float("inf")):
                rates.rates[(p.name, rate_key(t.kind.name, v))] = HOST_FLOPS / p.slowdown
    ledger = LoadLedger(profiles, capacity=cfg.fleet.queue_capacity)
    rng = np.random.default_rng(1)
    for p in profiles:  # every queue partly full, so that no policy takes a shortcut
        for j in range(int(rng.integers(1, cfg.fleet.queue_capacity))):
            ledger.add(p.name, -1 - j, float(rng.uniform(0.01, 0.5)))
    by_name = {p.name: p for p in profiles}

    per_policy = {}
    for name, policy in POLICIES.items():
        times = np.empty(len(tasks))
        for i, task in enumerate(tasks):
            start = time.perf_counter()
            est = candidates(task, ledger.snapshot(), by_name[task.origin], rates.rates,
                             now_s=task.arrival_s, max_accuracy_drop=cfg.max_accuracy_drop)
            policy(task, est, threshold=cfg.threshold, seed=0)
            times[i] = time.perf_counter() - start
        per_policy[name] = {"median_us": float(np.median(times) * 1e6),
                            "p99_us": float(np.percentile(times, 99) * 1e6)}
    worst = max(v["median_us"] for v in per_policy.values())
    return {"devices": len(profiles), "task_kinds": len(kinds), "decisions": len(tasks),
            "budget_us": args.budget_us, "worst_median_us": worst,
            "passed": worst <= args.budget_us, "policies": per_policy}


def report(result: dict[str, Any]) -> str:
    lines = [f"{result['devices']} devices, {result['task_kinds']} task kinds, "
             f"{result['decisions']} decisions per policy.", "",
             "| policy | median µs | p99 µs |", "|---|---|---|"]
    for name, v in result["policies"].items():
        lines.append(f"| {name} | {v['median_us']:.1f} | {v['p99_us']:.1f} |")
    verdict = "within" if result["passed"] else "OVER"
    lines += ["", f"Worst median {result['worst_median_us']:.1f} µs per decision: {verdict} "
                  f"the {result['budget_us']:.0f} µs budget (issue 6)."]
    return "\n".join(lines)


if __name__ == "__main__":
    outcome = main()
    print(report(outcome))
    sys.exit(0 if outcome["passed"] else 1)
