"""Private rounds: what privacy costs a steady round, rayfed against pfl-research (issue #18).

Workload: ``small`` of :mod:`benchmarks.federated_round` (mlp on digits, 50
participants, all of them in every round, pooled placement on 2 actors, tracking
and checkpoints off), each system in its own process, interleaved and repeated:

* ``rayfed``: non-private, the baseline of both ratios;
* ``rayfed-central``: ``privacy=central_dp`` (user-level DP-FedAvg, McMahan et al.
  2018): each update clipped to ``C`` in the pooled actors, Gaussian noise
  ``N(0, σ²C²)`` on the sum at the server, RDP accountant;
* ``rayfed-local``: ``privacy=local_dp`` (record-level DP-SGD, Abadi et al. 2016),
  vectorised over each actor's participants (:mod:`rayfed.privacy.vectorized_dpsgd`);
* ``pfl-2-central``: pfl-research 0.6 with 2 workers, its ``GaussianMechanism``
  applied centrally (clip each user's update to ``C``, noise of std ``σC`` on the
  cohort's sum) with its PLD accountant; the same σ, ``C``, δ and rounds, so each
  accountant reports its own ε for the same mechanism (PLD is tighter than RDP).

Steady s/round is the median gap between successive round ends from round 2 on;
cells are medians over repeats; ratios come from the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.federated_round import command, metrics, run_system, target_rows, workload_config
from benchmarks.peers import venvs
from benchmarks.peers.workload import load

SYSTEMS = ("rayfed", "rayfed-central", "rayfed-local", "pfl-2-central")
LABELS = {
    "rayfed": "rayfed, non-private",
    "rayfed-central": "rayfed, central_dp (user-level DP-FedAvg)",
    "rayfed-local": "rayfed, local_dp (record-level DP-SGD, vectorised)",
    "pfl-2-central": "pfl-research 0.6, 2 workers, central Gaussian mechanism + PLD",
}
# (label, numerator, denominator, bound): steady s/round ratio <= bound.
TARGETS = (
    ("central_dp steady round <= 1.2x the non-private one", "rayfed-central", "rayfed", 1.2),
    ("local_dp steady round <= 3x the non-private one", "rayfed-local", "rayfed", 3.0),
    ("rayfed central_dp <= 1.0x pfl-research's central DP (2 workers)", "rayfed-central",
     "pfl-2-central", 1.0),
)


def system_command(system: str, *, bundle: Path, weights: Path, pythons: dict[str, Path],
                   workers: int, central: str, local: str) -> list[str]:
    base = "pfl-2" if system.startswith("pfl") else "rayfed"
    cmd = command(base, workload="small", bundle=bundle, weights=weights, launch=time.time(),
                  pythons=pythons, workers=workers)
    if system == "rayfed-central":
        return [*cmd, "--privacy", "central_dp", "--central-dp", central]
    if system == "rayfed-local":
        return [*cmd, "--privacy", "local_dp", "--local-dp", local]
    if system == "pfl-2-central":
        return [*cmd, "--central-dp", central]
    return cmd


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="6 rounds, 1 repeat")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--central-dp", default="1.0,0.5,1e-5", metavar="SIGMA,CLIP,DELTA")
    ap.add_argument("--local-dp", default="8.0,1.0,1e-5", metavar="EPSILON,CLIP,DELTA")
    ap.add_argument("--timeout-s", type=float, default=600.0)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats = 6, 1
    systems = [s for s in args.systems.split(",") if s]
    skipped: dict[str, str] = {}
    pythons: dict[str, Path] = {}
    if any(s.startswith("pfl") for s in systems):
        if args.no_peers:
            skipped.update({s: "not run: --no-peers" for s in systems if s.startswith("pfl")})
        else:
            venv = venvs.ensure("pfl")
            if venv.python is None:
                skipped.update({s: f"not run: {venv.error}" for s in systems
                                if s.startswith("pfl")})
            else:
                pythons["pfl"] = venv.python
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="rf-private-"))
    from benchmarks.peers.bundle import export

    bundle = export(workload_config("small", rounds=args.rounds, tmp=str(tmp),
                                    workers=args.workers), tmp / "small.npz", name="small")
    participants = load(bundle).workload.num_clients
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
    errors: dict[str, str] = {}
    try:
        for rep in range(args.repeats):
            for system in systems:
                if system in skipped or system in errors:
                    continue
                print(f"  [{rep + 1}/{args.repeats}] {system} …", end=" ", flush=True)
                cmd = system_command(system, bundle=bundle, weights=tmp / f"{system}.npy",
                                     pythons=pythons, workers=args.workers,
                                     central=args.central_dp, local=args.local_dp)
                try:
                    raw = run_system(cmd, timeout_s=args.timeout_s,
                                     log=tmp / f"{system}-{rep}.log")
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    errors[system] = f"failed: {str(e)[-300:]}"
                    print("failed", flush=True)
                    continue
                m = metrics(raw, participants=participants)
                m.update({k: float(raw[k]) for k in ("epsilon", "noise_multiplier")
                          if raw.get(k) is not None})
                runs[system].append(m)
                print(f"{m['steady_s']:.4f} s/round", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cells = {s: {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
             for s, rs in runs.items() if rs}
    targets = []
    for label, num, den, bound in TARGETS:
        a, b = cells.get(num, {}).get("steady_s"), cells.get(den, {}).get("steady_s")
        if a is None or b is None:
            targets.append({"target": label, "value": None, "status": "not run"})
            continue
        ratio = a / b
        targets.append({"target": label, "value": ratio, "bound": bound,
                        "status": "met" if ratio <= bound else "missed",
                        "by": ratio / bound - 1.0})
    return {"rounds": args.rounds, "repeats": args.repeats, "workers": args.workers,
            "systems": systems, "cells": cells, "runs": runs, "skipped": skipped,
            "errors": errors, "targets": targets, "central_dp": args.central_dp,
            "local_dp": args.local_dp, "load_at_start": load_start,
            "load_at_end": os.getloadavg()}


def report(result: dict[str, Any]) -> str:
    cells = result["cells"]
    base = cells.get("rayfed", {}).get("steady_s")
    lines = ["| system | steady s/round | ratio vs rayfed non-private | updates/s | ε (δ as "
             "set) | start to first finished round (s) |", "|---|---|---|---|---|---|"]
    for s in result["systems"]:
        if s not in cells:
            why = result["skipped"].get(s) or result["errors"].get(s, "not run")
            lines.append(f"| {LABELS[s]} | {' '.join(why.replace('|', '/').split())} | | | | |")
            continue
        c = cells[s]
        eps = f"{c['epsilon']:.2f}" if "epsilon" in c else "–"
        ratio = f"{c['steady_s'] / base:.2f}×" if base else "n/a"
        lines.append(f"| {LABELS[s]} | {c['steady_s']:.4f} | {ratio} | "
                     f"{c['updates_per_s']:.0f} | {eps} | {c['first_round_s']:.2f} |")
    lines += ["", "Acceptance targets (ratios of steady-round medians from this run):", "",
              "| target | measured | bound | status |", "|---|---|---|---|"]
    lines += target_rows(result["targets"])
    ls, le = result["load_at_start"], result["load_at_end"]
    lines += ["", f"central_dp and pfl: σ, C, δ = {result['central_dp']}; local_dp: target "
              f"ε, per-sample C, δ = {result['local_dp']} (σ solved by rayfed's plan). "
              f"{result['rounds']} rounds × {result['repeats']} interleaved repeats, "
              f"{result['workers']} workers each; load average (1/5/15 min) at the start "
              f"{ls[0]:.1f}/{ls[1]:.1f}/{ls[2]:.1f}, at the end "
              f"{le[0]:.1f}/{le[1]:.1f}/{le[2]:.1f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
