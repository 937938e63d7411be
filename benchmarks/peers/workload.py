"""The shared federated workload, in plain numpy + torch, for every system compared.

rayfed exports one bundle per workload (:mod:`benchmarks.peers.bundle`): each
participant's training arrays in rayfed's order, the initial weights, the
held-out test split, the hyper-parameters, and every participant's batch order
for every round and epoch (rayfed's ``participant_seed`` permutations). The
plain loop and the peers' scripts load it through this module, which imports
nothing of rayfed or of the peers, so all of them do the same math: FedAvg
(McMahan et al. 2017, Algorithm 1) with E epochs of minibatch SGD per round.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    hidden_sizes: tuple[int, ...]
    channels: tuple[int, ...]
    num_clients: int
    rounds: int
    local_epochs: int
    batch_size: int
    lr: float
    seed: int


@dataclass(frozen=True)
class Bundle:
    workload: Workload
    x: list[torch.Tensor]
    y: list[torch.Tensor]
    x_test: torch.Tensor
    y_test: torch.Tensor
    init: dict[str, np.ndarray]
    # orders[r][p][e]: participant p's sample order in epoch e of round r + 1.
    orders: list[list[list[torch.Tensor]]]

    def num_examples(self, participant: int) -> int:
        return len(self.y[participant])


def save(path: Path, bundle: Bundle) -> None:
    wl = bundle.workload
    arrays: dict[str, np.ndarray] = {"x_test": bundle.x_test.numpy(),
                                     "y_test": bundle.y_test.numpy()}
    for p in range(wl.num_clients):
        arrays[f"x_{p}"] = bundle.x[p].numpy()
        arrays[f"y_{p}"] = bundle.y[p].numpy()
        for r in range(wl.rounds):
            for e in range(wl.local_epochs):
                arrays[f"order_{r}_{p}_{e}"] = bundle.orders[r][p][e].numpy()
    for k, v in bundle.init.items():
        arrays[f"init::{k}"] = v
    np.savez(path, **arrays)  # type: ignore[arg-type]
    meta = {**wl.__dict__, "init_names": list(bundle.init)}
    path.with_suffix(".json").write_text(json.dumps(meta))


def load(path: str | Path) -> Bundle:
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    names = meta.pop("init_names")
    for k in ("input_shape", "hidden_sizes", "channels"):
        meta[k] = tuple(meta[k])
    wl = Workload(**meta)
    with np.load(path) as z:
        x = [torch.from_numpy(z[f"x_{p}"]) for p in range(wl.num_clients)]
        y = [torch.from_numpy(z[f"y_{p}"]) for p in range(wl.num_clients)]
        orders = [[[torch.from_numpy(z[f"order_{r}_{p}_{e}"]) for e in range(wl.local_epochs)]
                   for p in range(wl.num_clients)] for r in range(wl.rounds)]
        init = {k: z[f"init::{k}"] for k in names}
        return Bundle(wl, x, y, torch.from_numpy(z["x_test"]), torch.from_numpy(z["y_test"]),
                      init, orders)


def build_model(wl: Workload) -> nn.Module:
    """rayfed's ``mlp`` and ``cnn1d`` (rayfed/models/registry.py), layer for layer.

    The state-dict names and shapes must match the bundle's initial weights;
    :func:`set_weights` checks that, so a drift from rayfed's registry fails loudly.
    """
    layers: list[nn.Module] = []
    if wl.model == "mlp":
        layers.append(nn.Flatten())
        width = int(np.prod(wl.input_shape))
        for h in wl.hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, wl.num_classes))
    elif wl.model == "cnn1d":
        in_ch, length = wl.input_shape
        for i, ch in enumerate(wl.channels):
            stride = 2 if i > 0 else 1
            layers += [nn.Conv1d(in_ch, ch, kernel_size=5 if i == 0 else 3, stride=stride,
                                 padding=2 if i == 0 else 1), nn.ReLU()]
            length = (length - 1) // stride + 1
            in_ch = ch
        layers += [nn.Flatten(), nn.Linear(in_ch * length, wl.num_classes)]
    else:
        raise ValueError(f"workload model {wl.model!r} is not mirrored here; use mlp or cnn1d")
    return nn.Sequential(*layers)


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    state = model.state_dict()
    want = {k: tuple(v.shape) for k, v in state.items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if want != got:
        raise ValueError(f"weights do not fit the model: model {want}, weights {got}")
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32))
                           for k, v in weights.items()})


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def local_train(model: nn.Module, bundle: Bundle, *, participant: int, server_round: int) -> int:
    """E epochs of SGD on one participant's shard in the bundle's batch order.

    ``server_round`` counts from 1. Returns the number of examples (FedAvg's weight).
    """
    wl = bundle.workload
    x, y = bundle.x[participant], bundle.y[participant]
    opt = torch.optim.SGD(model.parameters(), lr=wl.lr)
    model.train()
    for order in bundle.orders[server_round - 1][participant]:
        for s in range(0, len(order), wl.batch_size):
            idx = order[s : s + wl.batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return len(y)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def flat(weights: dict[str, np.ndarray]) -> np.ndarray:
    """Weights in state-dict order as one float32 vector (rayfed's parameter vector)."""
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in weights.values()])


def write_weights(path: str | Path, weights: dict[str, np.ndarray]) -> None:
    np.save(path, flat(weights))


RESULT_TAG = "BENCH_RESULT "


def emit(system: str, *, launch_time: float, round_ends: list[float],
         **extra: object) -> None:
    """Print the one line the harness parses: wall-clock (``time.time()``) stamps.

    ``launch_time`` is when the harness started this process, so the time to the
    first finished round includes interpreter start, imports and set-up.
    """
    print(RESULT_TAG + json.dumps({"system": system, "launch_time": launch_time,
                                   "round_ends": round_ends, **extra}), flush=True)


def runner_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every system runner takes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--launch-time", required=True, type=float)
    ap.add_argument("--weights-out", required=True, type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--central-dp", default=None, metavar="SIGMA,CLIP,DELTA",
                    help="user-level DP-FedAvg: noise multiplier, clipping norm, delta "
                         "(benchmarks.private_round)")
    return ap.parse_args(argv)


def central_dp(text: str | None) -> tuple[float, float, float] | None:
    """``--central-dp``'s (noise multiplier, clipping norm, delta), or None."""
    if not text:
        return None
    sigma, clip, delta = (float(v) for v in text.split(","))
    return sigma, clip, delta
