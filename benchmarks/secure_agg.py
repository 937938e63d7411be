"""Secure aggregation cost: a CKKS round against a plaintext round, and the floor.

Workload (issue #4): digits over 10 participants (iid), all of them every round,
``mlp`` 64-1024-64-10 (132,810 parameters: 33 ciphertexts of 4,096 slots per
participant at N=8192), 1 local epoch, batch 32, FedAvg, pooled placement on a
local Ray. Both runs use the same seed, so they do the same training.

Reported, as medians over rounds 2+ (round 1 pays one-off costs):

* plaintext round seconds and HE round seconds, with the HE round broken down:
  participants' encryption (sum over participants, and the slowest one), the
  aggregator's homomorphic sum (deserialize + add), the decryptor's decryption,
  and the decrypt call as the server sees it (transfer included);
* the floor: encrypting, adding and decrypting the same number of ciphertexts in
  a bare single-threaded loop, no Ray, no serialization;
* ratio = HE round / (plaintext round + floor); the target is <= 1.3.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import tenseal as ts

from rayfed.config import (
    CheckpointConfig,
    Config,
    DatasetConfig,
    FLConfig,
    ModelConfig,
    PartitionConfig,
    RuntimeConfig,
    SecureAggConfig,
    TrackingConfig,
)
from rayfed.secure_agg.packing import num_chunks

PARTICIPANTS = 10
TARGET = 1.3


def workload(tmp: str, *, secure_agg: str, rounds: int) -> Config:
    return Config(
        name=f"bench-secure-agg-{secure_agg}",
        seed=0,
        dataset=DatasetConfig(name="digits"),
        model=ModelConfig(name="mlp", hidden_sizes=[1024, 64]),
        partition=PartitionConfig(name="iid"),
        fl=FLConfig(num_clients=PARTICIPANTS, clients_per_round=PARTICIPANTS,
                    min_clients=PARTICIPANTS, rounds=rounds, local_epochs=1, batch_size=32,
                    lr=0.1, eval_every=0),
        runtime=RuntimeConfig(placement="pooled", num_cpus=2),
        tracking=TrackingConfig(enabled=False, uri=f"sqlite:///{tmp}/mlflow.db"),
        checkpoint=CheckpointConfig(enabled=False, dir=f"{tmp}/ckpt"),
        secure_agg=SecureAggConfig(name=secure_agg),
        output_dir=tmp,
    )


def run_rounds(cfg: Config) -> tuple[list[float], list[dict[str, float]], int, float]:
    """Per-round seconds and secure-aggregation metrics of one run."""
    from rayfed.fl.orchestrator import Orchestrator

    seconds, metrics = [], []
    with Orchestrator(cfg) as orch:
        for r in orch.rounds():
            seconds.append(r.seconds)
            metrics.append(orch.secure_agg.metrics() if orch.secure_agg else {})
        return seconds, metrics, int(orch.weights.size), float(orch.evaluate()[1])


def floor(num_params: int, *, participants: int, repeats: int) -> dict[str, float]:
    """Encrypt, add and decrypt the round's ciphertexts in a bare loop."""
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2.0 ** 40
    chunks = num_chunks(num_params, 4096)
    data = np.random.default_rng(0).normal(0, 0.01, 4096).tolist()
    best: dict[str, list[float]] = {"encrypt": [], "add": [], "decrypt": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        cts = [[ts.ckks_vector(ctx, data) for _ in range(chunks)] for _ in range(participants)]
        t1 = time.perf_counter()
        sums = cts[0]
        for other in cts[1:]:
            for a, b in zip(sums, other, strict=True):
                a += b
        t2 = time.perf_counter()
        for s in sums:
            s.decrypt()
        t3 = time.perf_counter()
        for k, v in (("encrypt", t1 - t0), ("add", t2 - t1), ("decrypt", t3 - t2)):
            best[k].append(v)
    out = {k: statistics.median(v) for k, v in best.items()}
    out["total"] = sum(out.values())
    out["ciphertexts"] = float(participants * chunks)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else 5
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plain_s, _, num_params, plain_acc = run_rounds(
                workload(tmp, secure_agg="none", rounds=rounds))
            he_s, he_metrics, _, he_acc = run_rounds(
                workload(tmp, secure_agg="ckks", rounds=rounds))
    finally:
        if started_here:
            ray.shutdown()
    steady = slice(1, None)
    breakdown = {k: statistics.median(m[k] for m in he_metrics[steady])
                 for k in he_metrics[-1]}
    fl = floor(num_params, participants=PARTICIPANTS, repeats=3)
    plain, he = statistics.median(plain_s[steady]), statistics.median(he_s[steady])
    return {
        "num_params": num_params, "participants": PARTICIPANTS, "rounds": rounds,
        "plaintext_round_s": plain, "he_round_s": he, "he_breakdown": breakdown,
        "floor": fl, "ratio": he / (plain + fl["total"]), "target": TARGET,
        "plaintext_accuracy": plain_acc, "he_accuracy": he_acc,
        "plaintext_rounds_s": plain_s, "he_rounds_s": he_s,
    }


def report(out: dict[str, Any]) -> str:
    b, fl = out["he_breakdown"], out["floor"]
    ok = "meets" if out["ratio"] <= out["target"] else "MISSES"
    rows = [
        "| measure | seconds |", "|---|---:|",
        f"| plaintext round | {out['plaintext_round_s']:.3f} |",
        f"| HE round | {out['he_round_s']:.3f} |",
        f"| - participants encrypting (sum over {out['participants']}) | "
        f"{b['secure_agg_encrypt_seconds']:.3f} |",
        f"| - slowest participant encrypting | {b['secure_agg_encrypt_seconds_max']:.3f} |",
        f"| - participants signing (sum, SHA-256 + Ed25519) | "
        f"{b.get('secure_agg_sign_seconds', 0.0):.3f} |",
        f"| - server screening (parse + verify) | "
        f"{b.get('secure_agg_screen_seconds', 0.0):.3f} |",
        f"| - decryptor: verify signatures | {b.get('secure_agg_verify_seconds', 0.0):.3f} |",
        f"| - homomorphic sum (parse + add) | {b['secure_agg_aggregate_seconds']:.3f} |",
        f"| - decryptor: decrypt | {b['secure_agg_decrypt_seconds']:.3f} |",
        f"| - decrypt call seen by the server | {b['secure_agg_decrypt_call_seconds']:.3f} |",
        f"| floor: encrypt {fl['ciphertexts']:.0f} ciphertexts | {fl['encrypt']:.3f} |",
        f"| floor: add | {fl['add']:.3f} |",
        f"| floor: decrypt | {fl['decrypt']:.3f} |",
        f"| floor total | {fl['total']:.3f} |",
    ]
    return "\n".join([
        f"{out['participants']} participants, {out['num_params']:,} parameters, "
        f"{b['secure_agg_ciphertext_bytes'] / 1e6:.1f} MB of ciphertexts per round, "
        f"medians of rounds 2..{out['rounds']}.", "", *rows, "",
        f"HE round / (plaintext round + floor) = **{out['ratio']:.2f}** ({ok} the target "
        f"<= {out['target']}). Final accuracy: plaintext {out['plaintext_accuracy']:.4f}, "
        f"CKKS {out['he_accuracy']:.4f}.",
    ])


if __name__ == "__main__":
    result = main()
    print(report(result))
