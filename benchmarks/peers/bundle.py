"""Export a rayfed workload as a bundle that the plain loop and the peers load.

The shards, the initial weights and every batch order come from rayfed's own
code (``FederatedData``, ``build_model(seed=...)``, ``participant_seed``), so a
system that follows the bundle does exactly the math a rayfed run does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.peers.workload import Bundle, Workload, save
from rayfed.config import Config
from rayfed.data.federated import FederatedData, load_test_split
from rayfed.fl.rounds import participant_seed
from rayfed.models import build_model, spec_from_config


def from_config(cfg: Config, *, name: str) -> Bundle:
    fl = cfg.fl
    if fl.clients_per_round != fl.num_clients:
        raise ValueError("the peer workloads put every participant in every round: "
                         f"set fl.clients_per_round={fl.num_clients}")
    data = FederatedData(cfg.dataset, cfg.partition, num_clients=fl.num_clients, seed=cfg.seed)
    test = load_test_split(cfg.dataset)
    spec = spec_from_config(cfg.model, input_shape=data.input_shape,
                            num_classes=data.num_classes)
    model = build_model(spec, seed=cfg.seed)
    clients = [data.client(p) for p in range(fl.num_clients)]
    orders = []
    for rnd in range(1, fl.rounds + 1):
        per_round = []
        for c in clients:
            g = torch.Generator().manual_seed(participant_seed(cfg.seed, rnd, c.participant_id))
            per_round.append([torch.randperm(len(c.x_train), generator=g)
                              for _ in range(fl.local_epochs)])
        orders.append(per_round)
    wl = Workload(name=name, model=spec.name, input_shape=tuple(spec.input_shape),
                  num_classes=spec.num_classes, hidden_sizes=tuple(spec.hidden_sizes),
                  channels=tuple(spec.channels), num_clients=fl.num_clients, rounds=fl.rounds,
                  local_epochs=fl.local_epochs, batch_size=fl.batch_size, lr=fl.lr,
                  seed=cfg.seed)
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return Bundle(wl, [c.x_train for c in clients], [c.y_train for c in clients],
                  torch.from_numpy(test.x), torch.from_numpy(test.y), init, orders)


def export(cfg: Config, path: Path, *, name: str) -> Path:
    save(path, from_config(cfg, name=name))
    return path
