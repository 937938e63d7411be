"""rayfed on a bundled workload, in its own process like the other systems.

The config comes from ``benchmarks.federated_round.workload_config`` and the
bundle was exported from that same config, so rayfed's own data, initial
weights and seeds are the bundle's; this runner checks the sizes agree.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from dataclasses import replace

import numpy as np

from benchmarks.peers.workload import RESULT_TAG, emit, load
from rayfed.config import Config, PrivacyConfig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--launch-time", required=True, type=float)
    ap.add_argument("--weights-out", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--privacy", default="none", choices=("none", "central_dp", "local_dp"))
    ap.add_argument("--central-dp", default=None, metavar="SIGMA,CLIP,DELTA",
                    help="central_dp's noise multiplier, clipping norm and delta")
    ap.add_argument("--local-dp", default=None, metavar="EPSILON,CLIP,DELTA",
                    help="local_dp's target epsilon, per-sample clipping norm and delta")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the driver over rounds 2+ (the times are then not clean)")
    args = ap.parse_args(argv)
    import ray

    from benchmarks.federated_round import workload_config
    from rayfed.fl.orchestrator import Orchestrator

    t_imported = time.time()

    wl = load(args.bundle).workload
    cfg = workload_config(args.workload, rounds=wl.rounds, tmp=tempfile.mkdtemp(),
                          workers=args.workers)
    cfg = with_privacy(cfg, args.privacy, central=args.central_dp, local=args.local_dp)
    if (cfg.fl.num_clients, cfg.fl.rounds, cfg.fl.batch_size) != (
            wl.num_clients, wl.rounds, wl.batch_size):
        raise SystemExit(f"{RESULT_TAG}{{\"error\": \"bundle and config disagree\"}}")
    # address="local": a new Ray of our own. Without it ray.init joins the newest Ray
    # already running on the machine (another user's, a test session's) and then
    # refuses num_cpus; rayfed's start_ray has that problem (see README).
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False,
             log_to_driver=True, configure_logging=False)
    t_ray = time.time()
    round_ends = []
    profiler = cProfile.Profile()
    with Orchestrator(cfg) as orch:
        t_ready = time.time()
        for r in orch.rounds():
            round_ends.append(time.time())
            if args.profile and r.server_round == 1:
                profiler.enable()
        profiler.disable()
        np.save(args.weights_out, orch.weights.astype(np.float32))
        privacy = {k: v for k, v in orch.privacy.summary().items()
                   if k in ("epsilon", "delta", "noise_multiplier")}
    ray.shutdown()
    phases = {"imports_s": t_imported - args.launch_time, "ray_init_s": t_ray - t_imported,
              "setup_s": t_ready - t_ray,
              "first_round_after_setup_s": round_ends[0] - t_ready}
    profile = ""
    if args.profile:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        profile = text.getvalue()
    emit("rayfed", launch_time=args.launch_time, round_ends=round_ends, phases=phases,
         profile=profile, **privacy)


def with_privacy(cfg: Config, mode: str, *, central: str | None,
                 local: str | None) -> Config:
    """``cfg`` with its privacy section for ``mode`` (benchmarks.private_round)."""
    if mode == "none":
        return cfg
    if mode == "central_dp":
        sigma, clip, delta = (float(v) for v in (central or "1.0,0.5,1e-5").split(","))
        privacy = PrivacyConfig(name="central_dp", noise_multiplier=sigma,
                                clipping_norm=clip, delta=delta)
    else:
        eps, clip, delta = (float(v) for v in (local or "8.0,1.0,1e-5").split(","))
        privacy = PrivacyConfig(name="local_dp", target_epsilon=eps, clipping_norm=clip,
                                delta=delta)
    return replace(cfg, privacy=privacy)


if __name__ == "__main__":
    main()
