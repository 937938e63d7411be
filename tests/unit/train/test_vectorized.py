"""Vectorised local training equals the per-participant loop it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayfed.data.federated import ClientData
from rayfed.fl.participant import LocalTraining, Participant
from rayfed.models import ModelSpec, build_model, get_flat
from rayfed.train.loop import Optimization
from rayfed.train.vectorized import train_vectorized, why_not_vectorizable
from rayfed.types import FitIns

SPECS = {
    "mlp": ModelSpec("mlp", (1, 8, 8), 10, (16,)),
    "cnn1d": ModelSpec("cnn1d", (1, 40), 10, ()),
}


def shard(n: int, spec: ModelSpec, seed: int) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    return ClientData(participant_id=seed, x_train=torch.randn(n, *spec.input_shape, generator=g),
                      y_train=torch.randint(0, 10, (n,), generator=g),
                      x_val=torch.zeros(0, *spec.input_shape), y_val=torch.zeros(0).long())


@pytest.mark.parametrize("model_name", sorted(SPECS))
@pytest.mark.parametrize("training", [
    {"epochs": 1, "batch_size": 8},
    # Shards of different lengths, a short last batch, two epochs (the generator
    # carries over), FedProx and weight decay all at once.
    {"epochs": 2, "batch_size": 5, "proximal_mu": 0.5, "weight_decay": 0.01},
])
def test_vectorised_equals_sequential(model_name: str, training: dict) -> None:
    spec = SPECS[model_name]
    opt = LocalTraining(lr=0.1, **training)
    sizes = [3, 17, 8, 1, 12]  # 1 example: a participant idle for most steps
    shards = [shard(n, spec, seed=i) for i, n in enumerate(sizes)]
    seeds = [100 + i for i in range(len(sizes))]
    w0 = get_flat(build_model(spec, seed=1))
    expected = []
    for data, seed in zip(shards, seeds, strict=True):
        p = Participant(data, build_model(spec, seed=0), opt)
        res = p.fit(w0, FitIns(data.participant_id, 1, seed, None))
        expected.append((res.delta, res.metrics["train_loss"]))

    got = train_vectorized(build_model(spec, seed=7), torch.from_numpy(w0),
                           [(d.x_train, d.y_train) for d in shards], seeds, opt, max_group=2)

    assert [r.num_examples for r in got] == sizes
    for (delta, loss), r in zip(expected, got, strict=True):
        assert np.abs(delta).max() > 1e-3  # every participant really trained
        np.testing.assert_allclose(r.delta.numpy(), delta, rtol=0, atol=2e-6)
        assert r.loss == pytest.approx(loss, rel=1e-5)


def test_stateful_optimizers_and_dropout_are_not_vectorised() -> None:
    mlp = build_model(SPECS["mlp"], seed=0)
    assert why_not_vectorizable(Optimization(1, 8, 0.1), mlp) is None
    assert "momentum" in str(why_not_vectorizable(Optimization(1, 8, 0.1, momentum=0.9), mlp))
    assert "adam" in str(why_not_vectorizable(Optimization(1, 8, 0.1, optimizer="adam"), mlp))
    dropout = torch.nn.Sequential(mlp, torch.nn.Dropout(0.5))
    assert "dropout" in str(why_not_vectorizable(Optimization(1, 8, 0.1), dropout))
    with pytest.raises(ValueError, match="does not apply"):
        train_vectorized(dropout, torch.zeros(1), [], [], Optimization(1, 8, 0.1))
