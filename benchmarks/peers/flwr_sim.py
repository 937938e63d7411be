"""Flower's simulation engine (flwr 1.42, Ray backend) on a bundled workload.

Runs in the venv that :mod:`benchmarks.peers.venvs` builds (flwr pins its own
Ray). Message API as documented for 1.42: a ``ServerApp`` whose main runs
``FedAvg.start`` (fraction_train=1.0, so every SuperNode trains every round,
weighted by ``num-examples``; no federated evaluation) and a ``ClientApp`` whose
``train`` handler trains the participant named by its ``partition-id`` in the
bundle's batch order. ``run_simulation`` runs both with one CPU per ClientApp,
so two ClientApps train at once on two cores, as rayfed's two actors do.

Round ends are stamped by ``evaluate_fn``, which ``Strategy.start`` calls right
after each round's aggregation. Flower averages weights (not deltas) in
float32, so its final weights differ from the loop's by float32 rounding.

Run as ``python -m benchmarks.peers.flwr_sim`` with ``RAYFED_BENCH_BUNDLE`` set:
the Ray workers inherit the environment and import this module by name.
"""

from __future__ import annotations

import functools
import os
import sys
import time

from benchmarks.peers import workload as W


@functools.cache
def _bundle() -> W.Bundle:
    # One load per Ray worker process, not per message.
    return W.load(os.environ["RAYFED_BENCH_BUNDLE"])


@functools.cache
def _model():  # type: ignore[no-untyped-def]
    import torch

    torch.set_num_threads(1)
    return W.build_model(_bundle().workload)


def _train(msg, context):  # type: ignore[no-untyped-def]
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    bundle, model = _bundle(), _model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    n = W.local_train(model, bundle, participant=int(context.node_config["partition-id"]),
                      server_round=int(msg.content["config"]["server-round"]))
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "metrics": MetricRecord({"num-examples": n})})
    return Message(content=content, reply_to=msg)


def _apps(round_ends: list[float], final: dict):  # type: ignore[no-untyped-def,type-arg]
    from flwr.app import ArrayRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    client = ClientApp()
    client.train()(_train)
    server = ServerApp()

    def stamp(server_round: int, arrays: ArrayRecord) -> None:
        if server_round > 0:  # 0 is the initial model, before any round
            round_ends.append(time.time())
            final["arrays"] = arrays

    @server.main()
    def _main(grid, context) -> None:  # type: ignore[no-untyped-def]
        wl = _bundle().workload
        n = wl.num_clients
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                          min_evaluate_nodes=0, min_available_nodes=n)
        import numpy as np
        import torch

        init = ArrayRecord({k: torch.from_numpy(np.asarray(v)) for k, v in
                            _bundle().init.items()})
        strategy.start(grid=grid, initial_arrays=init, num_rounds=wl.rounds,
                       evaluate_fn=stamp)

    return server, client


def main(argv: list[str] | None = None) -> None:
    args = W.runner_args(argv)
    os.environ["RAYFED_BENCH_BUNDLE"] = str(args.bundle)
    from flwr.simulation import run_simulation

    round_ends: list[float] = []
    final: dict = {}  # type: ignore[type-arg]
    server, client = _apps(round_ends, final)
    wl = _bundle().workload
    run_simulation(server_app=server, client_app=client, num_supernodes=wl.num_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   # "local": a Ray of its own, not the newest
                                   # one already running on the machine.
                                   "init_args": {"num_cpus": args.workers,
                                                 "address": "local"}})
    if len(round_ends) != wl.rounds:
        print(f"flwr finished {len(round_ends)} of {wl.rounds} rounds", file=sys.stderr)
        raise SystemExit(1)
    W.write_weights(args.weights_out, {k: v.numpy() for k, v in final["arrays"].items()})
    W.emit("flwr", launch_time=args.launch_time, round_ends=round_ends)


if __name__ == "__main__":
    # Re-import under the package name so Ray pickles the apps by reference.
    from benchmarks.peers import flwr_sim

    flwr_sim.main()
