"""Byzantine robustness: test accuracy under five attacks, FedAvg vs robust rules.

Issue #9, B1. Every run goes through the real stack (Orchestrator, pooled Ray
actors); the attacks are ``rayfed.adversary`` applied inside the actors.
Setting: digits, 20 participants (IID split), all 20 in every round, 20 %
malicious (4, drawn from ``adversary.seed``), ``mlp`` with 32 hidden units, five
local epochs of SGD per round (batch 16, lr 0.1), server learning rate 1, 10
rounds; accuracy on the held-out test split after the last round.

Aggregators: FedAvg (weighted mean), coordinate-wise median, trimmed mean with
``trim_ratio = 0.2`` (drops the 4 largest and 4 smallest values per coordinate),
Krum with ``f = 4`` (Blanchard et al. 2017).

Attacks (``conf/adversary/``): sign flipping ×4, model replacement (label-flipped
training boosted by γ = n / η = 20), label flipping, Gaussian noise (σ = 1 per
coordinate), and ALIE with the paper's ``z_max`` (0.385 for n = 20, m = 4) and,
beyond the paper's bound, with ``z = 1.5``.

Run (writes ``benchmarks/results/robustness.json`` and prints the table in
docs/reliability.md)::

    python -m benchmarks.robustness            # the full table
    python -m benchmarks.robustness --quick    # fewer rounds, a smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rayfed.config import (
    AdversaryConfig,
    CheckpointConfig,
    Config,
    DatasetConfig,
    FLConfig,
    ModelConfig,
    PartitionConfig,
    RuntimeConfig,
    StrategyConfig,
    TrackingConfig,
)

OUT = Path(__file__).resolve().parent / "results" / "robustness.json"
NUM_CLIENTS = 20
FRACTION = 0.2
ROUNDS = 10
# The values of conf/adversary/<name>.yaml.
ATTACKS: dict[str, dict[str, Any]] = {
    "none": {},
    "sign_flip": {"scale": 4.0},
    "scaling": {"scale": 20.0},
    "label_flip": {},
    "gaussian": {"scale": 1.0},
    "alie": {},
    # ALIE beyond the paper's bound: larger shifts are no longer hidden by the
    # bound's argument, but show how far the robust rules give way.
    "alie_z1.5": {"name": "alie", "z_max": 1.5},
}
AGGREGATORS: dict[str, StrategyConfig] = {
    "fedavg": StrategyConfig(name="fedavg"),
    "median": StrategyConfig(name="median", reducer="median"),
    "trimmed_mean": StrategyConfig(name="trimmed_mean", reducer="trimmed_mean",
                                   trim_ratio=0.2),
    "krum": StrategyConfig(name="krum", reducer="krum", num_byzantine=4, num_selected=1),
}


def config(attack: str, aggregator: str, *, rounds: int, tmp: str, seed: int = 0,
           partition: str = "iid") -> Config:
    settings = {"name": attack, **ATTACKS[attack]}
    adversary = (AdversaryConfig() if attack == "none" else
                 AdversaryConfig(fraction=FRACTION, seed=seed, **settings))
    return Config(
        name=f"robust-{attack}-{aggregator}", seed=seed,
        dataset=DatasetConfig(name="digits"),
        model=ModelConfig(name="mlp", hidden_sizes=[32]),
        partition=PartitionConfig(name=partition),
        strategy=AGGREGATORS[aggregator],
        fl=FLConfig(num_clients=NUM_CLIENTS, clients_per_round=NUM_CLIENTS, min_clients=1,
                    rounds=rounds, local_epochs=5, batch_size=16, lr=0.1,
                    round_timeout_s=600, eval_every=0),
        adversary=adversary,
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
    return {"accuracy": s["final_accuracy"], "status": s["status"],
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    ap.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--partition", default="iid")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else ROUNDS)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for attack in args.attacks:
                for agg in args.aggregators:
                    cfg = config(attack, agg, rounds=rounds, tmp=tmp, seed=seed,
                                 partition=args.partition)
                    rows.append({"attack": attack, "aggregator": agg, "seed": seed,
                                 "rounds": rounds, "partition": args.partition,
                                 **run_one(cfg)})
                    print(json.dumps(rows[-1]), flush=True)
    out = {"num_clients": NUM_CLIENTS, "fraction": FRACTION, "attacks": ATTACKS, "rows": rows}
    if not args.quick and rounds == ROUNDS:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(out, indent=2) + "\n")
    return out


def report(out: dict[str, Any]) -> str:
    """Mean test accuracy per attack × aggregator over seeds, with the difference
    to clean FedAvg (the issue's "within 5 points of clean")."""
    aggs = list(dict.fromkeys(r["aggregator"] for r in out["rows"]))
    attacks = list(dict.fromkeys(r["attack"] for r in out["rows"]))

    def acc(attack: str, agg: str) -> tuple[float, int] | None:
        vals = [r["accuracy"] for r in out["rows"]
                if r["attack"] == attack and r["aggregator"] == agg]
        return (100 * sum(vals) / len(vals), len(vals)) if vals else None

    clean = acc("none", "fedavg")
    lines = ["Test accuracy (%), mean over seeds (n = number of seeds); in brackets: "
             "points vs clean FedAvg.", "",
             "| attack | " + " | ".join(aggs) + " |",
             "|---|" + "---:|" * len(aggs)]
    for attack in attacks:
        cells = []
        for agg in aggs:
            a = acc(attack, agg)
            if a is None:
                cells.append("n/a")
            elif clean is None or (attack, agg) == ("none", "fedavg"):
                cells.append(f"{a[0]:.1f} (n={a[1]})")
            else:
                cells.append(f"{a[0]:.1f} ({a[0] - clean[0]:+.1f}, n={a[1]})")
        lines.append(f"| {attack if attack != 'none' else 'clean'} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
