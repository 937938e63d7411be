"""One DDP training script for two launchers, so that they can be compared fairly.

``torchrun --standalone --nproc_per_node=N benchmarks/ddp_script.py --out r.json``
runs it directly; ``benchmarks/ddp_amp.py`` runs the same :func:`run` inside Ray
Train's ``TorchTrainer``, which sets up the same process group. The steps are
rayfed's shared loop (:func:`rayfed.train.train_epoch`) on the CIFAR-10-shaped
CNN, with synthetic tensors unless ``--cifar-root`` holds the real files.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from rayfed.config import DatasetConfig
from rayfed.models import ModelSpec, build_model
from rayfed.train import make_optimizer, train_epoch
from rayfed.train.precision import amp_plan, make_grad_scaler, set_tf32, tf32_state
from rayfed.train.workload import DataSource


def run(*, precision: str, tf32: bool, epochs: int, batch_size: int, examples: int,
        cifar_root: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Train on an initialized process group; every rank returns the same numbers."""
    rank, world = dist.get_rank(), dist.get_world_size()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else \
        torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        set_tf32(tf32)
    amp = amp_plan(precision, device)
    work = DataSource(DatasetConfig(name="cifar10", root=cifar_root), synthetic_if_missing=True,
                      synthetic_examples=examples, seed=seed).load()
    model = build_model(ModelSpec("cnn", work.input_shape, 10, channels=(32, 64)), seed=seed)
    model = model.to(device)
    ddp = DistributedDataParallel(model, device_ids=[device] if cuda else None)
    dataset = TensorDataset(torch.from_numpy(work.x_train), torch.from_numpy(work.y_train))
    sampler: DistributedSampler[Any] = DistributedSampler(dataset, num_replicas=world,
                                                          rank=rank, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, pin_memory=cuda)
    optimizer = make_optimizer(ddp.parameters(), name="sgd", lr=0.01, momentum=0.9)
    scaler = make_grad_scaler(amp)
    rates = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        stats = train_epoch(ddp, loader, optimizer, device=device,
                            autocast_dtype=amp.autocast_dtype, scaler=scaler)
        if cuda:
            torch.cuda.synchronize(device)
        t = torch.tensor([time.perf_counter() - started], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        rates.append(stats.num_examples * world / float(t.item()))
    steady = rates[1:] or rates
    return {"samples_per_second": float(np.mean(steady)), "per_epoch": rates,
            "precision": precision, "tf32": tf32_state() if cuda else None,
            "num_workers": world, "data": work.source,
            "device": torch.cuda.get_device_name(device) if cuda else "cpu"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--examples", type=int, default=8192)
    ap.add_argument("--cifar-root", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    try:
        result = run(precision=args.precision, tf32=args.tf32, epochs=args.epochs,
                     batch_size=args.batch_size, examples=args.examples,
                     cifar_root=args.cifar_root)
        if dist.get_rank() == 0:
            with open(args.out, "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
