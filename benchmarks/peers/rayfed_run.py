"""rayfed on a bundled workload, in its own process like the other systems.

The config comes from ``benchmarks.federated_round.workload_config`` and the
bundle was exported from that same config, so rayfed's own data, initial
weights and seeds are the bundle's; this runner checks the sizes agree.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from benchmarks.peers.workload import RESULT_TAG, emit, load


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--launch-time", required=True, type=float)
    ap.add_argument("--weights-out", required=True)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    import ray

    from benchmarks.federated_round import workload_config
    from rayfed.fl.orchestrator import Orchestrator

    wl = load(args.bundle).workload
    cfg = workload_config(args.workload, rounds=wl.rounds, tmp=tempfile.mkdtemp(),
                          workers=args.workers)
    if (cfg.fl.num_clients, cfg.fl.rounds, cfg.fl.batch_size) != (
            wl.num_clients, wl.rounds, wl.batch_size):
        raise SystemExit(f"{RESULT_TAG}{{\"error\": \"bundle and config disagree\"}}")
    round_ends = []
    with Orchestrator(cfg) as orch:
        for _ in orch.rounds():
            round_ends.append(time.time())
        np.save(args.weights_out, orch.weights.astype(np.float32))
    ray.shutdown()
    emit("rayfed", launch_time=args.launch_time, round_ends=round_ends)


if __name__ == "__main__":
    main()
