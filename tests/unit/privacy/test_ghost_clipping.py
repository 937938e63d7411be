"""Ghost clipping against the per-sample gradients it avoids and against Opacus."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rayfed.models import ModelSpec, build_model, get_flat
from rayfed.privacy.ghost_clipping import ghost_clipped_sum, linear_chain
from rayfed.privacy.vectorized_dpsgd import (
    clip_factors,
    clipped_sum,
    per_sample_grads,
    train_vectorized_dp,
)
from rayfed.train.loop import Optimization
from tests.unit.privacy.test_vectorized_dpsgd import SPECS as ALL_SPECS
from tests.unit.privacy.test_vectorized_dpsgd import one_thread, opacus_step, plan

# The linear chains of test_vectorized_dpsgd's models, and a deeper one.
SPECS = {"logreg": ALL_SPECS["logreg"], "mlp": ALL_SPECS["mlp"],
         "mlp2": ModelSpec("mlp", (1, 8, 8), 10, (32, 16))}
__all__ = ["one_thread"]  # its autouse fixture: one torch thread, as a host runs


def stacked_params(models: list[nn.Module]) -> dict[str, torch.Tensor]:
    names = [n for n, _ in models[0].named_parameters()]
    return {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
            for n in names}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_ghost_sums_equal_the_per_sample_gradient_path(name: str) -> None:
    spec = SPECS[name]
    g = torch.Generator().manual_seed(7)
    models = [build_model(spec, seed=s) for s in range(3)]
    params = stacked_params(models)
    x = torch.randn(3, 6, *spec.input_shape, generator=g)
    y = torch.randint(0, 10, (3, 6), generator=g)
    valid = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5], dtype=torch.float32)
    grads, losses = per_sample_grads(models[0], params, x, y)
    norms = torch.cat([v.reshape(3, 6, -1) for v in grads.values()], -1).norm(dim=-1)
    clip = norms.median(dim=1).values  # about half of each participant's examples clipped
    factors = clip_factors(grads, valid, max_grad_norm=clip)
    assert (factors[valid > 0] < 1).any() and (factors[valid > 0] == 1).any()

    chain = linear_chain(models[0], spec.input_shape)
    assert chain is not None
    summed, ghost_losses = ghost_clipped_sum(chain, params, x, y, valid, max_grad_norm=clip)
    torch.testing.assert_close(summed, clipped_sum(grads, factors), rtol=0, atol=1e-6)
    torch.testing.assert_close(ghost_losses, losses, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_ghost_sum_equals_opacus_summed_gradient(name: str) -> None:
    spec = SPECS[name]
    g = torch.Generator().manual_seed(3)
    model = build_model(spec, seed=0)
    x = torch.randn(8, *spec.input_shape, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    clip = 0.5
    chain = linear_chain(model, spec.input_shape)
    summed, _ = ghost_clipped_sum(chain, stacked_params([model]), x[None], y[None],
                                  torch.ones(1, 8), max_grad_norm=torch.tensor([clip]))
    reference = opacus_step(copy.deepcopy(model), x, y, sigma=0.0, clip=clip,
                            expected_batch_size=8)
    torch.testing.assert_close(summed[0], torch.cat([p.summed_grad.reshape(-1)
                                                     for p in reference]), rtol=0, atol=1e-6)


def test_a_private_round_is_the_same_with_and_without_ghost_clipping() -> None:
    spec = SPECS["mlp"]
    model = build_model(spec, seed=0)
    g = torch.Generator().manual_seed(1)
    counts = [5, 17, 40, 9]
    shards = [(torch.randn(n, *spec.input_shape, generator=g), torch.randint(0, 10, (n,),
                                                                            generator=g))
              for n in counts]
    plans = [plan(sigma=1.1, clip=0.7, n=n, batch_size=8, epochs=1) for n in counts]
    opt = Optimization(epochs=1, batch_size=8, lr=0.1, weight_decay=1e-3, proximal_mu=0.01)

    def run(ghost: bool):
        gens = [torch.Generator().manual_seed(100 + i) for i in range(len(counts))]
        return train_vectorized_dp(model, get_flat_t(model), shards, [11, 12, 13, 14], gens,
                                   plans, opt, ghost=ghost)

    for a, b in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(a.delta, b.delta, rtol=0, atol=1e-6)
        assert a.loss == pytest.approx(b.loss, rel=1e-6)
        assert (a.examples_seen, a.steps) == (b.examples_seen, b.steps)


def get_flat_t(model: nn.Module) -> torch.Tensor:
    return torch.as_tensor(get_flat(model))


@pytest.mark.parametrize(("model", "example_shape"), [
    (build_model(ModelSpec("cnn1d", (1, 40), 10, ()), seed=0), (1, 40)),
    (nn.Sequential(nn.Flatten(start_dim=2), nn.Linear(8, 10)), (1, 8)),
    (nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 10)), (1, 8, 8)),
    (nn.Linear(64, 10), (64,)),
    # A Linear layer over a sequence: ‖g hᵀ‖ is not ‖g‖‖h‖ there.
    (nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)), (5, 8)),
])
def test_models_that_are_not_a_linear_chain_use_per_sample_gradients(model,
                                                                     example_shape) -> None:
    assert linear_chain(model, example_shape) is None


def test_a_chain_without_flatten_on_vectors_is_one() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    assert linear_chain(model, (8,)) is not None


def test_a_linear_layer_over_a_sequence_is_refused() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    params = stacked_params([model])
    with pytest.raises(ValueError, match="one vector"):
        ghost_clipped_sum(linear_chain(model, (8,)), params, torch.randn(1, 2, 5, 8),
                          torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2),
                          max_grad_norm=torch.tensor([1.0]))
