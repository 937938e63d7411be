"""The local loop: FedProx's gradient, exact evaluation, and epoch coverage."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rayfed.train import evaluate, make_optimizer, tensor_batches, train_epoch


def small_model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


@torch.no_grad()
def data_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(model(x), y))


def data(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("mu", [0.5, 3.0])
def test_fedprox_step_matches_autograd_of_the_proximal_objective(mu: float) -> None:
    lr = 0.1
    x, y = data()
    model = small_model(0)
    anchor = [p.detach().clone() for p in small_model(1).parameters()]  # w0 != w
    w = [p.detach().clone() for p in model.parameters()]

    # Reference: differentiate CE(w) + (mu/2)||w - w0||^2 directly.
    ref = small_model(0)
    loss = F.cross_entropy(ref(x), y)
    loss = loss + mu / 2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(ref.parameters(), anchor,
                                                                           strict=True))
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    expected = [wi - lr * g for wi, g in zip(w, grads, strict=True)]

    opt = make_optimizer(model.parameters(), name="sgd", lr=lr)
    stats = train_epoch(model, [(x, y)], opt, proximal_mu=mu, anchor=anchor)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-6)
    # The reported loss is the data loss only, without the proximal term.
    assert stats.loss == pytest.approx(data_loss(small_model(0), x, y), rel=1e-6)
    assert (stats.num_examples, stats.steps) == (6, 1)


def test_proximal_term_changes_the_step_by_lr_mu_times_distance() -> None:
    lr, mu = 0.1, 2.0
    x, y = data()
    anchor = [p.detach().clone() for p in small_model(1).parameters()]
    plain, prox = small_model(0), small_model(0)
    train_epoch(plain, [(x, y)], make_optimizer(plain.parameters(), name="sgd", lr=lr))
    train_epoch(prox, [(x, y)], make_optimizer(prox.parameters(), name="sgd", lr=lr),
                proximal_mu=mu, anchor=anchor)
    for p_plain, p_prox, w, w0 in zip(plain.parameters(), prox.parameters(),
                                      small_model(0).parameters(), anchor, strict=True):
        torch.testing.assert_close(p_prox - p_plain, -lr * mu * (w - w0), rtol=0, atol=1e-6)


def test_proximal_mu_without_anchor_is_plain_sgd() -> None:
    x, y = data()
    a, b = small_model(0), small_model(0)
    train_epoch(a, [(x, y)], make_optimizer(a.parameters(), name="sgd", lr=0.1))
    train_epoch(b, [(x, y)], make_optimizer(b.parameters(), name="sgd", lr=0.1),
                proximal_mu=5.0, anchor=None)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_train_epoch_loss_is_example_weighted_and_skips_empty_batches() -> None:
    x, y = data(n=7)
    model = small_model(0)
    # lr = 0 freezes the weights, so every batch is scored by the same model.
    opt = make_optimizer(model.parameters(), name="sgd", lr=0.0)
    batches = [(x[:5], y[:5]), (x[5:5], y[5:5]), (x[5:], y[5:])]
    stats = train_epoch(model, batches, opt)
    full = data_loss(small_model(0), x, y)
    assert stats.loss == pytest.approx(full, rel=1e-6)
    assert (stats.num_examples, stats.steps) == (7, 2)


def test_no_batches_gives_zero_stats() -> None:
    model = small_model(0)
    stats = train_epoch(model, [], make_optimizer(model.parameters(), name="sgd", lr=0.1))
    assert (stats.loss, stats.num_examples, stats.steps) == (0.0, 0, 0)


def test_make_optimizer_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"fl\.optimizer='lbfgs'"):
        make_optimizer(small_model().parameters(), name="lbfgs", lr=0.1)


def identity_classifier() -> nn.Module:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    return model


def test_evaluate_accuracy_and_loss_are_exact() -> None:
    # Logits equal the inputs, so the prediction is the larger coordinate.
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 0.5], [1.0, 0.0]])
    y = torch.tensor([0, 1, 1, 0, 0])  # rows 0, 1, 4 right; rows 2, 3 wrong
    # CE of logits (a, b) for label 0 is log(1 + e^(b - a)); for label 1, log(1 + e^(a - b)).
    per_row = [math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log1p(math.exp(2)),
               math.log1p(math.exp(0.5)), math.log1p(math.exp(-1))]
    for batch_size in (4096, 2, 1):  # chunking must not change the result
        loss, acc = evaluate(identity_classifier(), x, y, batch_size=batch_size)
        assert acc == 3 / 5
        assert loss == pytest.approx(sum(per_row) / 5, rel=1e-6)


def test_evaluate_leaves_eval_mode_and_no_grad() -> None:
    model = identity_classifier()
    evaluate(model, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    assert not model.training
    assert model.weight.grad is None


def test_evaluate_on_empty_split_is_nan() -> None:
    loss, acc = evaluate(identity_classifier(), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert math.isnan(loss) and math.isnan(acc)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 50), batch_size=st.integers(1, 60), seed=st.integers(0, 2**31))
def test_tensor_batches_cover_every_index_once(n: int, batch_size: int, seed: int) -> None:
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1) * 10
    y = torch.arange(n)
    batches = list(tensor_batches(x, y, batch_size=batch_size,
                                  generator=torch.Generator().manual_seed(seed)))
    sizes = [len(yb) for _, yb in batches]
    assert sizes == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    seen = torch.cat([yb for _, yb in batches]) if batches else torch.zeros(0, dtype=torch.long)
    assert sorted(seen.tolist()) == list(range(n))
    for xb, yb in batches:  # features stay paired with their labels
        torch.testing.assert_close(xb[:, 0], yb.float() * 10, rtol=0, atol=0)


def test_tensor_batches_shuffle_follows_the_generator() -> None:
    x, y = torch.arange(20).unsqueeze(1), torch.arange(20)

    def order(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return torch.cat([yb for _, yb in tensor_batches(x, y, batch_size=6, generator=g)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert order(1) != list(range(20))
    # Consecutive epochs from one generator reshuffle.
    g = torch.Generator().manual_seed(1)
    first = next(yb for _, yb in tensor_batches(x, y, batch_size=20, generator=g)).tolist()
    second = next(yb for _, yb in tensor_batches(x, y, batch_size=20, generator=g)).tolist()
    assert first == order(1)
    assert second != first
    assert sorted(second) == list(range(20))
