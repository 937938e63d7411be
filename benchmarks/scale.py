"""Scale curve: rayfed's round time and peak memory at 10, 100 and 1,000
participants per round (issue #10, item 3).

Cross-device shape (conf/experiment/cross_device.yaml): ``mlp`` on mnist1d, an
IID split with 20 training examples per participant (so the work per round
grows with the participants, as in a real cohort), every participant in every
round, 1 local epoch, batch 16, on the default pooled placement (2 actors on
2 cores). Each size runs in its own process; a sampler thread here sums the
proportional set size (PSS, shared pages split fairly) and the RSS of that
process and all its descendants (Ray's GCS, raylet and worker processes) every
0.1 s and keeps the peak.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.peers.workload import RESULT_TAG

REPO = Path(__file__).resolve().parent.parent
SIZES = (10, 100, 1000)
EXAMPLES_PER_PARTICIPANT = 20


def tree_memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes of ``pid`` and all its descendants."""
    pss = rss = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                info = p.memory_full_info()
                pss += info.pss
                rss += info.rss
    return pss, rss


class PeakSampler:
    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_pss = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            pss, rss = tree_memory(self.pid)
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def config(participants: int, *, rounds: int, tmp: str):  # type: ignore[no-untyped-def]
    from rayfed.config import (
        CheckpointConfig,
        Config,
        DatasetConfig,
        FLConfig,
        ModelConfig,
        PartitionConfig,
        RuntimeConfig,
        TrackingConfig,
    )

    # 80% of the generated sequences are the training pool, the rest the test split.
    samples = int(participants * EXAMPLES_PER_PARTICIPANT / 0.8)
    return Config(
        name=f"bench-scale-{participants}",
        seed=0,
        dataset=DatasetConfig(name="mnist1d", num_samples=samples, val_fraction=0.0),
        model=ModelConfig(name="mlp", hidden_sizes=[128]),
        partition=PartitionConfig(name="iid", min_samples=1),
        fl=FLConfig(num_clients=participants, clients_per_round=participants,
                    min_clients=participants, rounds=rounds, local_epochs=1, batch_size=16,
                    lr=0.05, eval_every=0),
        runtime=RuntimeConfig(placement="pooled", num_cpus=2),
        tracking=TrackingConfig(enabled=False, uri=f"sqlite:///{tmp}/mlflow.db"),
        checkpoint=CheckpointConfig(enabled=False, dir=f"{tmp}/ckpt"),
        output_dir=tmp,
    )


def child(participants: int, rounds: int) -> None:
    """One size, in this process: prints the round ends."""
    import ray

    from rayfed.fl.orchestrator import Orchestrator

    cfg = config(participants, rounds=rounds, tmp=tempfile.mkdtemp(prefix="rayfed-scale-"))
    # A Ray of our own, not the newest one on the machine (see peers/rayfed_run.py).
    ray.init(address="local", num_cpus=cfg.runtime.num_cpus, include_dashboard=False,
             log_to_driver=True, configure_logging=False)
    ends = []
    with Orchestrator(cfg) as orch:
        for r in orch.rounds():
            if r.status != "completed":
                raise SystemExit(f"round {r.server_round} {r.status}: {r.reason}")
            ends.append(time.time())
    ray.shutdown()
    print(RESULT_TAG + json.dumps({"round_ends": ends}), flush=True)


def run_size(participants: int, rounds: int, timeout_s: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    launch = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.scale", "--child",
                             str(participants), "--rounds", str(rounds)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakSampler(proc.pid) as mem:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        return {"participants": participants, "error": f"exit {proc.returncode}: {err[-400:]}"}
    ends = json.loads(lines[-1][len(RESULT_TAG):])["round_ends"]
    steady = statistics.median(b - a for a, b in itertools.pairwise(ends))
    return {"participants": participants, "steady_s": steady,
            "first_round_s": ends[0] - launch, "updates_per_s": participants / steady,
            "peak_pss_gib": mem.peak_pss / 2**30, "peak_rss_gib": mem.peak_rss / 2**30}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds, sizes 10 and 100")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--timeout-s", type=float, default=600.0)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.rounds)
        return {}
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.quick:
        args.rounds = 3
        sizes = [s for s in sizes if s <= 100]
    rows = []
    for n in sizes:
        print(f"  scale: {n} participants per round …", end=" ", flush=True)
        row = run_size(n, args.rounds, args.timeout_s)
        print(row.get("error") or f"{row['steady_s']:.3f} s/round, "
              f"peak PSS {row['peak_pss_gib']:.2f} GiB", flush=True)
        rows.append(row)
    return {"rows": rows, "rounds": args.rounds, "load_at_end": os.getloadavg()}


def report(result: dict[str, Any]) -> str:
    lines = ["| participants per round | steady s/round | s per participant update | "
             "updates/s | start to first round (s) | peak PSS, all processes (GiB) | "
             "peak RSS sum (GiB) |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            why = " ".join(r["error"][-200:].replace("|", "/").split())
            lines.append(f"| {r['participants']} | failed: {why} | | | | | |")
            continue
        lines.append(f"| {r['participants']} | {r['steady_s']:.3f} | "
                     f"{r['steady_s'] / r['participants'] * 1e3:.2f} ms | "
                     f"{r['updates_per_s']:.0f} | {r['first_round_s']:.1f} | "
                     f"{r['peak_pss_gib']:.2f} | {r['peak_rss_gib']:.2f} |")
    lines += ["", f"{result['rounds']} rounds per size, one run each; steady s/round is the "
              "median gap between round ends from round 2 on. RSS double-counts pages that "
              "Ray's processes share (plasma store, torch libraries); PSS splits them. "
              f"Load average at the end: {', '.join(f'{x:.1f}' for x in result['load_at_end'])}."]
    return "\n".join(lines)


if __name__ == "__main__":
    out = main()
    if out:  # empty in the --child process
        print(report(out))
