"""The floor: FedAvg as one would write it in a single process with plain PyTorch.

No framework at all: a list of shards, one model reused for every participant,
and a weighted mean of the deltas in float64 (what rayfed's reducer does), so
the loop's final weights equal rayfed's bit for bit.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.peers.workload import (
    build_model,
    emit,
    get_weights,
    load,
    local_train,
    runner_args,
    set_weights,
    write_weights,
)


def main(argv: list[str] | None = None) -> None:
    args = runner_args(argv)
    # Tiny models run faster on one thread than on two (measured in overhead.py).
    torch.set_num_threads(1)
    bundle = load(args.bundle)
    wl = bundle.workload
    model = build_model(wl)
    global_w = {k: torch.from_numpy(np.asarray(v)) for k, v in bundle.init.items()}
    round_ends = []
    for rnd in range(1, wl.rounds + 1):
        deltas, counts = [], []
        for p in range(wl.num_clients):
            set_weights(model, {k: v.numpy() for k, v in global_w.items()})
            counts.append(local_train(model, bundle, participant=p, server_round=rnd))
            deltas.append(torch.cat([(v.detach() - global_w[k]).ravel()
                                     for k, v in model.state_dict().items()]))
        w = torch.tensor(counts, dtype=torch.float64)
        avg = ((torch.stack(deltas).double() * w[:, None]).sum(0) / w.sum()).float()
        offset = 0
        for k, v in global_w.items():
            global_w[k] = v + avg[offset : offset + v.numel()].view_as(v)
            offset += v.numel()
        round_ends.append(time.time())
    set_weights(model, {k: v.numpy() for k, v in global_w.items()})
    write_weights(args.weights_out, get_weights(model))
    emit("loop", launch_time=args.launch_time, round_ends=round_ends)


if __name__ == "__main__":
    main()
