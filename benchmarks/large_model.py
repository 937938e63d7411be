"""A model that is not tiny: ``resnet_gn`` (ResNet-18 layout with GroupNorm, 2.8 M
parameters) on CIFAR-10-shaped data, through ``dataset=files`` (issue #16).

Each participant's shard is an NPZ file of its own (3×32×32 float32 images, 10
classes; random values: the benchmark measures time and memory, not accuracy),
read only in its actor. rayfed (pooled, 2 actors, tracking and checkpoints off)
runs the same rounds as a single-process loop over the same ``Participant``
objects, seeds and shards; both report the steady seconds per round (median of
rounds 2+) in the same run, and rayfed the peak memory (PSS) of each actor.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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


def write_sites(root: Path, *, sites: int, per_site: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for pid in range(sites):
        d = root / f"site_{pid}"
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "train.npz", x=rng.normal(size=(per_site, 3, 32, 32)).astype(np.float32),
                 y=rng.integers(0, 10, per_site).astype(np.int64))
    np.savez(root / "test.npz", x=rng.normal(size=(64, 3, 32, 32)).astype(np.float32),
             y=rng.integers(0, 10, 64).astype(np.int64))


def workload(root: Path, *, sites: int, rounds: int) -> Config:
    return Config(
        name="bench-large-model", seed=0,
        dataset=DatasetConfig(name="files", train_path=f"{root}/site_{{participant_id}}/train.npz",
                              test_path=f"{root}/test.npz", format="npz", num_classes=10,
                              input_shape=[3, 32, 32]),
        model=ModelConfig(name="resnet_gn", channels=[32, 64, 128, 256]),
        partition=PartitionConfig(name="iid"),
        fl=FLConfig(num_clients=sites, clients_per_round=sites, min_clients=sites, rounds=rounds,
                    local_epochs=1, batch_size=32, lr=0.05, eval_every=0,
                    round_timeout_s=600),
        runtime=RuntimeConfig(placement="pooled", num_cpus=2, pool_size=2),
        tracking=TrackingConfig(enabled=False), checkpoint=CheckpointConfig(enabled=False),
        output_dir=str(root))


def run_rayfed(cfg: Config) -> dict[str, Any]:
    import psutil
    import ray

    from rayfed.fl.orchestrator import Orchestrator

    peak: dict[int, float] = {}
    with Orchestrator(cfg) as orch:
        pids = ray.get([a.ready.remote() for a in orch.placement.actors])
        seconds = []
        for r in orch.rounds():
            seconds.append(r.seconds)
            for pid in pids:
                pss = psutil.Process(pid).memory_full_info().pss / 2**20
                peak[pid] = max(peak.get(pid, 0.0), pss)
        weights = orch.weights.copy()
        setup = orch.setup_seconds
    ray.shutdown()
    return {"round_seconds": seconds, "setup_seconds": setup, "weights": weights,
            "actor_peak_pss_mib": sorted(peak.values())}


def run_loop(cfg: Config) -> dict[str, Any]:
    """The same rounds in one process: the same participants, seeds and mean."""
    import torch

    from rayfed.data.files import load_site
    from rayfed.data.source import file_source
    from rayfed.fl.participant import LocalTraining, Participant
    from rayfed.fl.rounds import participant_seed
    from rayfed.models import build_model, get_flat, spec_from_config
    from rayfed.types import FitIns

    torch.set_num_threads(1)
    src, _ = file_source(cfg.dataset)
    spec = spec_from_config(cfg.model, input_shape=(3, 32, 32), num_classes=10)
    model = build_model(spec, seed=cfg.seed)
    weights = get_flat(model)
    training = LocalTraining.from_config(cfg)
    people = [Participant(load_site(src, pid, val_fraction=cfg.dataset.val_fraction,
                                    seed=cfg.seed), build_model(spec), training)
              for pid in range(cfg.fl.num_clients)]
    seconds = []
    for rnd in range(1, cfg.fl.rounds + 1):
        t0 = time.perf_counter()
        fits = [p.fit(weights, FitIns(p.participant_id, rnd,
                                      participant_seed(cfg.seed, rnd, p.participant_id)))
                for p in people]
        n = np.array([f.num_examples for f in fits], dtype=np.float64)
        update = (n[:, None] * np.stack([f.delta for f in fits]).astype(np.float64)).sum(0)
        weights = (weights + update / n.sum()).astype(np.float32)
        seconds.append(time.perf_counter() - t0)
    return {"round_seconds": seconds, "weights": weights}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.large_model")
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--per-site", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.per_site = 3, 64
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sites(root, sites=args.sites, per_site=args.per_site)
        cfg = workload(root, sites=args.sites, rounds=args.rounds)
        loop = run_loop(cfg)
        fed = run_rayfed(cfg)
    steady = {k: statistics.median(v["round_seconds"][1:] or v["round_seconds"])
              for k, v in (("loop", loop), ("rayfed", fed))}
    return {"sites": args.sites, "per_site": args.per_site, "rounds": args.rounds,
            "num_params": int(loop["weights"].size),
            "loop_s_per_round": steady["loop"], "rayfed_s_per_round": steady["rayfed"],
            "ratio": steady["rayfed"] / steady["loop"],
            "rayfed_setup_s": fed["setup_seconds"],
            "max_weight_diff": float(np.abs(loop["weights"] - fed["weights"]).max()),
            "actor_peak_pss_mib": fed["actor_peak_pss_mib"]}


def report(r: dict[str, Any]) -> str:
    pss = ", ".join(f"{m:.0f}" for m in r["actor_peak_pss_mib"])
    return "\n".join([
        f"resnet_gn ({r['num_params']:,} parameters), {r['sites']} sites × {r['per_site']} "
        f"CIFAR-10-shaped examples (NPZ per site, dataset=files), batch 32, 1 local epoch, "
        f"{r['rounds']} rounds, pooled on 2 actors; the loop is one process, one thread.", "",
        "| system | steady s/round | ratio vs loop |", "|---|---|---|",
        f"| single-process loop | {r['loop_s_per_round']:.2f} | 1.00× |",
        f"| rayfed | {r['rayfed_s_per_round']:.2f} | {r['ratio']:.2f}× |", "",
        f"Peak memory (PSS) per actor: {pss} MiB. rayfed's set-up: "
        f"{r['rayfed_setup_s']:.1f} s. Largest weight difference from the loop after "
        f"{r['rounds']} rounds: {r['max_weight_diff']:.2e}."])


if __name__ == "__main__":
    print(report(main()))
