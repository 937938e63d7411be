"""One pooled actor's local_dp round: the Opacus loop against vectorised DP-SGD.

Workload: 25 participants of digits (iid), ``mlp`` (64-128-10), batch 16, one
local epoch, σ = 1.0, C = 1.0, one torch thread, as a pooled host runs them.

* ``opacus``: the sequential path, ``Participant.fit`` with ``RecordLevelDp``
  (one DPOptimizer per participant, GradSampleModule hooks);
* ``vectorised``: ``RecordLevelDp.admit`` per participant, one
  :func:`~rayfed.privacy.vectorized_dpsgd.train_vectorized_dp` for the group,
  ``settle`` per participant (the same ledger work as the Opacus path);
* ``plain``: the non-private vectorised round (:func:`train_vectorized`), the
  reference of issue #18's "local_dp ≤ 3× the non-private round".

Each variant runs once as a warm-up, then ``repeats`` times interleaved; the
median seconds per round are printed. Run: ``python -m benchmarks.vectorized_dpsgd``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from rayfed.config import (
    CheckpointConfig,
    Config,
    DatasetConfig,
    FLConfig,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    TrackingConfig,
)
from rayfed.data.federated import FederatedData
from rayfed.fl.participant import LocalTraining, Participant
from rayfed.models import build_model, get_flat, spec_from_config
from rayfed.privacy.dpsgd import RecordLevelDp, settle
from rayfed.privacy.noise import torch_noise_generator
from rayfed.privacy.vectorized_dpsgd import train_vectorized_dp
from rayfed.train.vectorized import train_vectorized
from rayfed.types import FitIns

NUM, BATCH = 25, 16


def _config(out: Path) -> Config:
    return Config(name="bench", seed=0, dataset=DatasetConfig(name="digits"),
                  model=ModelConfig(name="mlp", hidden_sizes=[128]),
                  partition=PartitionConfig(name="iid"),
                  fl=FLConfig(num_clients=NUM, clients_per_round=NUM, min_clients=1, rounds=10,
                              local_epochs=1, batch_size=BATCH, lr=0.05),
                  privacy=PrivacyConfig(name="local_dp", noise_multiplier=1.0, clipping_norm=1.0,
                                        delta=1e-5),
                  tracking=TrackingConfig(enabled=False),
                  checkpoint=CheckpointConfig(enabled=False),
                  output_dir=str(out))


def main(repeats: int = 3) -> dict[str, float]:
    torch.set_num_threads(1)
    cfg = _config(Path("/tmp"))
    data = FederatedData(cfg.dataset, cfg.partition, num_clients=NUM, seed=0)
    clients = [data.client(i) for i in range(NUM)]
    spec = spec_from_config(cfg.model, input_shape=data.input_shape,
                            num_classes=data.num_classes)
    model = build_model(spec, seed=0)
    arch = copy.deepcopy(model)  # taken before Opacus hooks the model it wraps
    record_dp = RecordLevelDp(cfg, model)
    training = LocalTraining.from_config(cfg)
    participants = [Participant(c, model, training, record_dp=record_dp) for c in clients]
    w0 = get_flat(model)
    shards = [(c.x_train, c.y_train) for c in clients]

    def opacus(rnd: int) -> None:
        for i, p in enumerate(participants):
            p.fit(w0, FitIns(i, rnd, 1000 * rnd + i, None))

    def vectorised(rnd: int) -> None:
        admitted = [record_dp.admit(num_examples=len(x), state=None, participant_id=i)
                    for i, (x, _) in enumerate(shards)]
        seeds = [1000 * rnd + i for i in range(NUM)]
        results = train_vectorized_dp(
            arch, torch.from_numpy(w0), shards, seeds,
            [torch_noise_generator(secure=False, seed=s) for s in seeds],
            [plan for plan, _, _ in admitted], training)
        for res, (plan, ledger, event) in zip(results, admitted, strict=True):
            res.delta.numpy()
            settle(plan, ledger, event, server_round=rnd)

    def plain(rnd: int) -> None:
        train_vectorized(arch, torch.from_numpy(w0), shards,
                         [1000 * rnd + i for i in range(NUM)], training)

    variants = {"opacus": opacus, "vectorised": vectorised, "plain": plain}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        fn(0)  # warm-up: imports, first ε, torch.func tracing caches
    for rnd in range(1, repeats + 1):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn(rnd)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    sizes = [len(x) for x, _ in shards]
    print(f"{NUM} participants, digits/mlp-128, batch {BATCH}, 1 epoch, shard sizes "
          f"{min(sizes)}-{max(sizes)}; median of {repeats} interleaved rounds (s):")
    for k, v in med.items():
        print(f"  {k:10s} {v:.4f}   all: {', '.join(f'{t:.4f}' for t in times[k])}")
    print(f"  opacus / vectorised = {med['opacus'] / med['vectorised']:.2f}x; "
          f"vectorised / plain = {med['vectorised'] / med['plain']:.2f}x; "
          f"opacus / plain = {med['opacus'] / med['plain']:.2f}x")
    return med


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
