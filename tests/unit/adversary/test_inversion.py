"""Gradient inversion as pure functions: metrics, label recovery, DLG and IG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rayfed.adversary.inversion import (
    gradient_from_update,
    infer_label,
    invert_gradient,
    psnr,
    split_like,
    total_variation,
)
from rayfed.data.datasets import load_splits
from rayfed.models import ModelSpec, build_model, get_flat


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as in a participant host: on 2 busy cores the attack's
    ~1,000 tiny autograd calls run up to 30× slower with 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    pool, _ = load_splits("digits")
    return pool


def true_grads(model, x, y):
    loss = F.cross_entropy(model(torch.from_numpy(x[None])), torch.tensor([y]))
    return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]


def test_psnr_known_values():
    x = np.zeros((1, 8, 8))
    assert psnr(x, x + 0.1) == pytest.approx(20.0)  # MSE 1e-2
    assert psnr(x, x + 0.1, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2))
    half = x.copy()
    half[..., :4] = 1.0  # MSE 0.5
    assert psnr(x, half) == pytest.approx(10 * math.log10(2))
    assert psnr(x, x) == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[0])


def test_total_variation_known_values():
    assert float(total_variation(torch.ones(1, 1, 4, 4))) == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0  # every horizontal neighbour differs, no vertical one
    assert float(total_variation(stripes)) == pytest.approx(1.0)


def test_gradient_from_one_sgd_step_is_exact(digits):
    model = build_model(ModelSpec("cnn", (1, 8, 8), 10), seed=0)
    x, y = digits.x[0], int(digits.y[0])
    grads = true_grads(model, x, y)
    before = get_flat(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    F.cross_entropy(model(torch.from_numpy(x[None])), torch.tensor([y])).backward()
    opt.step()
    got = split_like(gradient_from_update(get_flat(model) - before, lr=0.1),
                     list(model.parameters()))
    for g, t in zip(got, grads, strict=True):
        # float32 weights: the delta keeps ~7 digits of w, so the error scales with |w|/lr.
        np.testing.assert_allclose(g.numpy(), t.numpy(), atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="lr"):
        gradient_from_update(before, lr=0.0)
    with pytest.raises(ValueError, match="parameters"):
        split_like(before[:-1], list(model.parameters()))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_label_is_recovered_from_the_gradient(digits, name):
    model = build_model(ModelSpec(name, (1, 8, 8), 10, hidden_sizes=(32,)), seed=0)
    for i in range(20):
        y = int(digits.y[i])
        assert infer_label(true_grads(model, digits.x[i], y), num_classes=10) == y
    with pytest.raises(ValueError, match="classifier"):
        infer_label([torch.zeros(3, 4)], num_classes=10)


def test_dlg_recovers_one_example_on_a_small_mlp(digits):
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, hidden_sizes=(32,)), seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = digits.x[3], int(digits.y[3])
    rec = invert_gradient(model, true_grads(model, x, y), input_shape=(1, 8, 8),
                          num_classes=10, steps=10, seed=0, method="dlg")
    # Measured ~111 dB: an MLP's first layer gives the input away almost linearly.
    assert psnr(x, rec.image) >= 60.0
    assert rec.label == y and rec.method == "dlg" and rec.image.shape == (1, 8, 8)
    assert len(rec.losses) == 11 and rec.final_loss < 1e-6 < rec.losses[0]
    # The attacker only reads the model.
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b) and p.grad is None


def test_inverting_gradients_recovers_on_the_cnn_and_is_deterministic(digits):
    model = build_model(ModelSpec("cnn", (1, 8, 8), 10), seed=0)
    x, y = digits.x[0], int(digits.y[0])
    flat = torch.cat([g.flatten() for g in true_grads(model, x, y)]).numpy()
    # The cosine loss is blind to scale: a clipped 0.01·g works as well as g.
    runs = [invert_gradient(model, s * flat, input_shape=(1, 8, 8), num_classes=10,
                            steps=200, seed=0, method="ig") for s in (1.0, 1.0, 0.01)]
    scores = [psnr(x, r.image) for r in runs]
    assert min(scores) >= 30.0, scores  # measured ~69 dB
    assert all(r.label == y for r in runs)
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    assert runs[0].losses == runs[1].losses
    assert all(r.image.min() >= 0.0 and r.image.max() <= 1.0 for r in runs)


def test_restarts_keep_the_lowest_matching_loss(digits):
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, hidden_sizes=(32,)), seed=0)
    grads = true_grads(model, digits.x[1], int(digits.y[1]))
    kw = {"input_shape": (1, 8, 8), "num_classes": 10, "steps": 3, "seed": 1, "method": "dlg"}
    first = invert_gradient(model, grads, **kw, restarts=1)
    best = invert_gradient(model, grads, **kw, restarts=3)
    # Restart 0 of the three is the single run; the winner is never worse.
    assert best.final_loss <= first.final_loss
    assert best.restart in (0, 1, 2)
    with pytest.raises(ValueError, match="method"):
        invert_gradient(model, grads, input_shape=(1, 8, 8), num_classes=10, steps=1, seed=0,
                        method="nope")  # type: ignore[arg-type]
