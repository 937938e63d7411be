"""Utility under DP: final test accuracy at ε ∈ {1, 3, 8} (δ = 1e-5) vs non-private.

Every run goes through the real stack (Orchestrator, pooled Ray actors, the
update pipeline, the accountants); σ is solved from ``privacy.target_epsilon``
before training. Settings:

* record level (``privacy=local_dp``, DP-SGD at each participant): 10 silos, all
  in every round, ``mlp`` 128, batch 32, per-sample clipping C = 1;
* user level (``privacy=central_dp``, DP-FedAvg): 200 virtual participants in
  pooled mode, Poisson-sampled with q = 0.25 (50 expected per round), 5 local
  epochs, update clipping C = 0.5, server noise, server momentum 0.9, ``mlp`` 32.

The non-private baseline of each row uses the same data split, model, rounds and
learning rate, with ``privacy=none`` (and uniform selection of the same number).
30 rounds each; accuracy on the held-out test split after the last round.

Run (writes ``benchmarks/results/privacy_utility.json`` and prints the table in
docs/privacy.md)::

    python -m benchmarks.privacy_utility            # the full table
    python -m benchmarks.privacy_utility --quick    # fewer rounds, a smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rayfed.config import (
    CheckpointConfig,
    Config,
    DatasetConfig,
    FLConfig,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    RuntimeConfig,
    StrategyConfig,
    TrackingConfig,
)

EPSILONS = (1.0, 3.0, 8.0)
DELTA = 1e-5
OUT = Path(__file__).resolve().parent / "results" / "privacy_utility.json"


def _fl(level: str, rounds: int) -> FLConfig:
    if level == "record":
        return FLConfig(num_clients=10, clients_per_round=10, min_clients=1, rounds=rounds,
                        local_epochs=1, batch_size=32, lr=0.5, round_timeout_s=600,
                        eval_every=0)
    return FLConfig(num_clients=200, clients_per_round=50, min_clients=1, rounds=rounds,
                    local_epochs=5, batch_size=8, lr=0.2, round_timeout_s=600, eval_every=0)


def config(dataset: str, level: str, epsilon: float | None, *, rounds: int, tmp: str) -> Config:
    privacy = PrivacyConfig()
    if epsilon is not None:
        privacy = PrivacyConfig(name="local_dp" if level == "record" else "central_dp",
                                target_epsilon=epsilon, delta=DELTA,
                                clipping_norm=1.0 if level == "record" else 0.5)
    return Config(
        name=f"utility-{dataset}-{level}-{epsilon}", seed=0,
        dataset=DatasetConfig(name=dataset, val_fraction=0.0, num_samples=5000),
        model=ModelConfig(name="mlp", hidden_sizes=[128] if level == "record" else [32]),
        partition=PartitionConfig(name="iid", min_samples=1),
        fl=_fl(level, rounds), privacy=privacy,
        # DP-FedAvg with server momentum, as McMahan et al. 2018 train it.
        strategy=StrategyConfig(name="fedavgm", server_momentum=0.9 if level == "user" else 0.0),
        runtime=RuntimeConfig(placement="pooled", pool_size=2, torch_threads=1),
        tracking=TrackingConfig(enabled=False), checkpoint=CheckpointConfig(enabled=False),
        output_dir=tmp)


def run_one(cfg: Config) -> dict[str, Any]:
    from rayfed.fl.orchestrator import Orchestrator

    t0 = time.perf_counter()
    with Orchestrator(cfg) as orch:
        for _ in orch.rounds():
            pass
        s = orch.summary()
    return {"accuracy": s["final_accuracy"], "epsilon": s.get("epsilon"),
            "noise_multiplier": s.get("noise_multiplier"), "status": s["status"],
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--levels", nargs="+", default=["record", "user"])
    args = ap.parse_args(argv)
    rounds = {"record": 5 if args.quick else 30, "user": 5 if args.quick else 30}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            for level in args.levels:
                for eps in (None, *EPSILONS):
                    cfg = config(dataset, level, eps, rounds=rounds[level], tmp=tmp)
                    r = run_one(cfg)
                    rows.append({"dataset": dataset, "level": level, "target_epsilon": eps,
                                 "rounds": rounds[level], **r})
                    print(json.dumps(rows[-1]), flush=True)
    out = {"delta": DELTA, "rows": rows}
    if not args.quick:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(out, indent=2) + "\n")
    return out


def report(out: dict[str, Any]) -> str:
    lines = ["| dataset | level | non-private | ε=1 | ε=3 | ε=8 |", "|---|---|---:|---:|---:|---:|"]
    keys = sorted({(r["dataset"], r["level"]) for r in out["rows"]},
                  key=lambda k: (k[0], k[1] != "record"))
    for dataset, level in keys:
        acc = {r["target_epsilon"]: r for r in out["rows"]
               if r["dataset"] == dataset and r["level"] == level}
        cells = [f"{100 * acc[None]['accuracy']:.1f}%" if None in acc else "n/a"]
        for eps in EPSILONS:
            r = acc.get(eps)
            cells.append(f"{100 * r['accuracy']:.1f}% (ε={r['epsilon']:.2f}, σ="
                         f"{r['noise_multiplier']:.2f})" if r else "n/a")
        lines.append(f"| {dataset} | {level} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
