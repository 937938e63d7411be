"""Framework overhead: rayfed vs a plain single-process PyTorch loop, same math.

Workload (issue #2): digits split over 50 participants (Dirichlet 0.5), every
participant in every round, ``mlp`` 64-128-10, 1 local epoch, batch 16, SGD lr 0.1,
FedAvg. Both sides use the same shards, the same per-participant seeds and the same
batch order, and the benchmark checks that they end at the same weights, so the
comparison is of frameworks, not of different work.

Reported: steady-state seconds per round (median of rounds 2+), the time from
start to the first finished round, and their ratios. Each side runs ``repeats``
times, interleaved; the median of the per-repeat medians is reported.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
from rayfed.data.federated import FederatedData
from rayfed.fl.rounds import participant_seed


def workload(rounds: int, tmp: str) -> Config:
    return Config(
        name="bench-overhead",
        seed=0,
        dataset=DatasetConfig(name="digits"),
        model=ModelConfig(name="mlp", hidden_sizes=[128]),
        partition=PartitionConfig(name="dirichlet", alpha=0.5),
        fl=FLConfig(num_clients=50, clients_per_round=50, min_clients=50, rounds=rounds,
                    local_epochs=1, batch_size=16, lr=0.1, eval_every=0),
        runtime=RuntimeConfig(placement="pooled", num_cpus=2),
        tracking=TrackingConfig(enabled=False, uri=f"sqlite:///{tmp}/mlflow.db"),
        checkpoint=CheckpointConfig(enabled=False, dir=f"{tmp}/ckpt"),
        output_dir=tmp,
    )


def plain_loop(cfg: Config, *, threads: int) -> tuple[list[float], float, np.ndarray]:
    """FedAvg as one would write it in a single process with plain PyTorch."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _plain_loop(cfg)
    finally:
        torch.set_num_threads(previous)


def _plain_loop(cfg: Config) -> tuple[list[float], float, np.ndarray]:
    t_start = time.perf_counter()
    data = FederatedData(cfg.dataset, cfg.partition, num_clients=cfg.fl.num_clients,
                         seed=cfg.seed)
    clients = [data.client(i) for i in range(cfg.fl.num_clients)]
    from rayfed.models import ModelSpec, build_model

    model = build_model(ModelSpec("mlp", data.input_shape, data.num_classes, (128,)),
                        seed=cfg.seed)
    global_w = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    round_times: list[float] = []
    first_round = 0.0
    for rnd in range(1, cfg.fl.rounds + 1):
        t0 = time.perf_counter()
        deltas, counts = [], []
        for c in clients:
            # A copy: vector_to_parameters makes the parameters views of its input.
            torch.nn.utils.vector_to_parameters(global_w.clone(), model.parameters())
            opt = torch.optim.SGD(model.parameters(), lr=cfg.fl.lr)
            g = torch.Generator().manual_seed(participant_seed(cfg.seed, rnd, c.participant_id))
            model.train()
            order = torch.randperm(len(c.x_train), generator=g)
            for s in range(0, len(order), cfg.fl.batch_size):
                idx = order[s : s + cfg.fl.batch_size]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(c.x_train[idx]), c.y_train[idx]).backward()
                opt.step()
            deltas.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach()
                          - global_w)
            counts.append(len(c.x_train))
        w = torch.tensor(counts, dtype=torch.float64)
        avg = (torch.stack(deltas).double() * w[:, None]).sum(0) / w.sum()
        global_w = global_w + avg.float()
        round_times.append(time.perf_counter() - t0)
        if rnd == 1:
            first_round = time.perf_counter() - t_start
    return round_times, first_round, global_w.numpy()


def rayfed_run(cfg: Config) -> tuple[list[float], float, np.ndarray, dict[str, Any]]:
    from rayfed.fl.orchestrator import Orchestrator
    from rayfed.tracking.mlflow import MlflowTracker

    t_start = time.perf_counter()
    tracker = (MlflowTracker(uri=cfg.tracking.uri, experiment="bench")
               if cfg.tracking.enabled else None)
    round_times: list[float] = []
    with Orchestrator(cfg, tracker=tracker) as orch:
        t_prev = time.perf_counter()
        first_round = 0.0
        for r in orch.rounds():
            now = time.perf_counter()
            round_times.append(now - t_prev)
            t_prev = now
            if r.server_round == 1:
                first_round = now - t_start
        weights = orch.weights.copy()
        summary = orch.summary()
    if tracker:
        tracker.finish("FINISHED")
    return round_times, first_round, weights, summary


def steady(times: list[float]) -> float:
    return float(np.median(times[1:]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    import ray

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="10 rounds, 2 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats = 10, 2
    tmp = tempfile.mkdtemp(prefix="rayfed-bench-")
    cfg = workload(args.rounds, tmp)
    variants = {
        "rayfed (tracking+checkpoints off)": cfg,
        "rayfed (defaults: MLflow sqlite + checkpoint every round)": replace(
            cfg, tracking=replace(cfg.tracking, enabled=True, log_model=False),
            checkpoint=replace(cfg.checkpoint, enabled=True)),
    }
    # The loop runs with torch's default threads and with one thread; the faster is
    # the baseline (tiny models often run faster single-threaded).
    loops = {f"plain loop ({n} torch thread{'s' if n > 1 else ''})": n
             for n in sorted({torch.get_num_threads(), 1})}
    results: dict[str, dict[str, list[float]]] = {
        k: {"steady": [], "first": []} for k in [*loops, *variants]}
    max_diff = 0.0
    ray_start = time.perf_counter()
    cold_first: float | None = None
    for rep in range(args.repeats):
        for name, threads in loops.items():
            times, first, w_loop = plain_loop(cfg, threads=threads)
            results[name]["steady"].append(steady(times))
            results[name]["first"].append(first)
        for name, vcfg in variants.items():
            if rep == 0 and cold_first is None:
                ray_start = time.perf_counter()
            times, first, w_ray, _ = rayfed_run(vcfg)
            if cold_first is None:
                cold_first = time.perf_counter() - ray_start - sum(times[1:])
            results[name]["steady"].append(steady(times))
            results[name]["first"].append(first)
            max_diff = max(max_diff, float(np.abs(w_ray - w_loop).max()))
    ray.shutdown()
    base = min(float(np.median(results[name]["steady"])) for name in loops)
    rows = []
    for name, r in results.items():
        s = float(np.median(r["steady"]))
        rows.append({"system": name, "steady_s_per_round": s, "ratio_vs_loop": s / base,
                     "first_round_s": float(np.median(r["first"]))})
    return {"rows": rows, "rounds": args.rounds, "repeats": args.repeats,
            "max_abs_weight_diff": max_diff, "cold_first_round_s": cold_first,
            "torch_threads_driver": torch.get_num_threads(), "cpus": os.cpu_count()}


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))


def report(result: dict[str, Any]) -> str:
    """Markdown section for RESULTS.md."""
    lines = [
        "| system | steady-state s/round (median of rounds 2+) | ratio vs loop | "
        "start to first finished round (s) |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['system']} | {r['steady_s_per_round']:.4f} | "
                     f"{r['ratio_vs_loop']:.2f}× | {r['first_round_s']:.2f} |")
    lines += [
        "",
        f"{result['rounds']} rounds × {result['repeats']} interleaved repeats; each cell is "
        "the median over repeats. Identical math: the largest absolute difference between "
        f"rayfed's and the loop's final weights was {result['max_abs_weight_diff']:.2e}. "
        f"Cold start (Ray start + actors + first round) in the first repeat: "
        f"{result['cold_first_round_s']:.2f} s. Ratios are against the faster loop.",
    ]
    return "\n".join(lines)
