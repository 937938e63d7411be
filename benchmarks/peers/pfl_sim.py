"""Apple's pfl-research simulator (pfl 0.6, PyTorch) on a bundled workload.

Runs in the venv that :mod:`benchmarks.peers.venvs` builds. ``FederatedAveraging``
with a ``PyTorchModel`` (local SGD at the bundle's lr; central SGD with lr 1, so
the server adds the averaged delta), ``WeightByDatapoints`` so the average is
weighted by examples as in rayfed, a cohort of every participant each round
(``MinimizeReuseUserSampler`` cycles through all of them), no evaluation.

One process: ``python -m benchmarks.peers.pfl_sim``. Two workers:
``torchrun --standalone --nproc_per_node 2 -m benchmarks.peers.pfl_sim``; pfl then
splits each cohort between the workers (balanced by ``user_id_to_weight``) and
all-reduces their summed updates over torch.distributed (gloo).

Batch order: pfl's ``Dataset.iter`` walks a user's data in order, so the runner
overrides ``train_one_user`` to hand pfl's own SGD the shard permuted by the
bundle's order for that round. pfl sums float32 updates, so its final weights
differ from the loop's by float32 rounding.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from benchmarks.peers import workload as W


def main(argv: list[str] | None = None) -> None:
    args = W.runner_args(argv)
    torch.set_num_threads(1)
    np.random.seed(0)  # pfl's samplers must draw the same sequence on every worker
    torch.manual_seed(0)
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import MinimizeReuseUserSampler
    from pfl.hyperparam import NNTrainHyperParams
    from pfl.metrics import Metrics
    from pfl.model.pytorch import PyTorchModel

    bundle = W.load(args.bundle)
    wl = bundle.workload
    if wl.local_epochs != 1:
        raise SystemExit("pfl_sim replays one epoch per round; use local_epochs=1")

    class Net(torch.nn.Module):
        """pfl's PyTorchModel wants ``loss`` and ``metrics`` on the module."""

        def __init__(self) -> None:
            super().__init__()
            self.net = W.build_model(wl)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.train()
            return torch.nn.functional.cross_entropy(self(x), y)

        @torch.no_grad()
        def metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict:  # type: ignore[type-arg]
            return {}

    net = Net()
    W.set_weights(net.net, bundle.init)

    class BundleOrderFedAvg(FederatedAveraging):  # type: ignore[misc]
        def train_one_user(self, initial_model_state, model, user_dataset,  # type: ignore[no-untyped-def]
                           central_context):
            p = int(user_dataset.user_id)
            order = bundle.orders[central_context.current_central_iteration][p][0]
            permuted = Dataset(raw_data=[bundle.x[p][order], bundle.y[p][order]],
                               user_id=user_dataset.user_id)
            return super().train_one_user(initial_model_state, model, permuted,
                                          central_context)

    round_ends: list[float] = []

    class Stamp(TrainingProcessCallback):  # type: ignore[misc]
        def after_central_iteration(self, aggregate_metrics, model, *,  # type: ignore[no-untyped-def]
                                    central_iteration):
            round_ends.append(time.time())
            return False, Metrics()

    users = list(range(wl.num_clients))
    data = FederatedDataset(
        lambda p: Dataset(raw_data=[bundle.x[p], bundle.y[p]], user_id=str(p)),
        MinimizeReuseUserSampler(users),
        user_id_to_weight={p: bundle.num_examples(p) for p in users})
    dp = W.central_dp(args.central_dp)
    extra: dict[str, object] = {}
    if dp is None:
        postprocessors = [WeightByDatapoints()]
    else:
        # User-level central DP as pfl ships it: each user's update clipped to the
        # bound, Gaussian noise of std sigma * bound on the cohort's sum, every user
        # weighted 1 (no WeightByDatapoints: it would scale the sensitivity), and
        # pfl's PLD accountant over the run's rounds with every user in each cohort.
        from pfl.privacy import (
            CentrallyAppliedPrivacyMechanism,
            GaussianMechanism,
            PLDPrivacyAccountant,
        )

        sigma, clip, delta = dp
        accountant = PLDPrivacyAccountant(num_compositions=wl.rounds,
                                          sampling_probability=1.0, mechanism="gaussian",
                                          noise_parameter=sigma, delta=delta)
        mechanism = GaussianMechanism.from_privacy_accountant(accountant=accountant,
                                                              clipping_bound=clip)
        postprocessors = [CentrallyAppliedPrivacyMechanism(mechanism)]
        extra = {"epsilon": float(accountant.epsilon), "delta": delta,
                 "noise_multiplier": float(accountant.cohort_noise_parameter)}
    backend = SimulatedBackend(training_data=data, val_data=None,
                               postprocessors=postprocessors)
    model = PyTorchModel(model=net, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0))
    FedAvg = BundleOrderFedAvg()
    FedAvg.run(
        algorithm_params=NNAlgorithmParams(central_num_iterations=wl.rounds,
                                           evaluation_frequency=wl.rounds + 1,
                                           train_cohort_size=wl.num_clients,
                                           val_cohort_size=None),
        backend=backend, model=model,
        model_train_params=NNTrainHyperParams(local_num_epochs=1,
                                              local_learning_rate=wl.lr,
                                              local_batch_size=wl.batch_size),
        callbacks=[Stamp()])
    if int(os.environ.get("RANK", "0")) == 0:
        W.write_weights(args.weights_out, W.get_weights(net.net))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        W.emit(f"pfl-{world}", launch_time=args.launch_time, round_ends=round_ends, **extra)


if __name__ == "__main__":
    main()
