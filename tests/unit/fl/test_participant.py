"""Participant.fit against hand-computed SGD steps, FedProx, state carrying, accounting."""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rayfed.data.federated import ClientData
from rayfed.fl import safe_format
from rayfed.fl.participant import LocalTraining, Participant
from rayfed.models import ModelSpec, build_model, get_flat, num_params, set_flat
from rayfed.types import FitIns

SPEC = ModelSpec("mlp", (1, 8, 8), 10, (16,))
D = 64 * 16 + 16 + 16 * 10 + 10  # weights and biases of 64 -> 16 -> 10
LR = 0.1


def client_data(n_train: int = 24, n_val: int = 12, seed: int = 0) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    return ClientData(
        participant_id=3,
        x_train=torch.randn(n_train, 1, 8, 8, generator=g),
        y_train=torch.randint(0, 10, (n_train,), generator=g),
        x_val=torch.randn(n_val, 1, 8, 8, generator=g),
        y_val=torch.randint(0, 10, (n_val,), generator=g),
    )


def participant(data: ClientData | None = None, **training: Any) -> Participant:
    t = {"epochs": 1, "batch_size": 1000, "lr": LR, **training}
    return Participant(data or client_data(), build_model(SPEC, seed=0), LocalTraining(**t))


def global_weights() -> np.ndarray:
    return get_flat(build_model(SPEC, seed=1))


def full_batch_grad(w: np.ndarray, data: ClientData) -> tuple[np.ndarray, float]:
    model = build_model(SPEC)
    set_flat(model, w)
    loss = F.cross_entropy(model(data.x_train), data.y_train)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]).numpy(), float(loss.detach())


def ins(seed: int = 5, state: bytes | None = None) -> FitIns:
    return FitIns(participant_id=3, server_round=2, seed=seed, state=state)


def test_model_has_expected_size() -> None:
    assert num_params(build_model(SPEC, seed=0)) == D
    assert global_weights().shape == (D,)


def test_one_full_batch_sgd_step_is_minus_lr_times_gradient() -> None:
    data = client_data()
    w0 = global_weights()
    res = participant(data).fit(w0, ins())
    grad, loss = full_batch_grad(w0, data)
    assert res.delta.dtype == np.float32
    assert res.delta.shape == (D,)
    np.testing.assert_allclose(res.delta, -LR * grad, atol=1e-6, rtol=0)
    assert np.abs(grad).max() > 1e-3  # the comparison is not between two zeros
    assert res.metrics["train_loss"] == pytest.approx(loss, rel=1e-6)


def test_fit_starts_from_the_global_weights_not_the_scratch_model() -> None:
    p = participant()
    w0 = global_weights()
    first = p.fit(w0, ins())
    # The shared scratch model now holds w0 + delta; a second fit must reload w0.
    second = p.fit(w0, ins())
    np.testing.assert_array_equal(first.delta, second.delta)


def test_fit_is_deterministic_in_the_seed() -> None:
    data, w0 = client_data(n_train=40), global_weights()
    a = participant(data, batch_size=8, epochs=2).fit(w0, ins(seed=11))
    b = participant(data, batch_size=8, epochs=2).fit(w0, ins(seed=11))
    c = participant(data, batch_size=8, epochs=2).fit(w0, ins(seed=12))
    np.testing.assert_array_equal(a.delta, b.delta)
    assert a.metrics["train_loss"] == b.metrics["train_loss"]
    assert not np.allclose(a.delta, c.delta)  # another shuffle, another trajectory


def test_fit_does_not_modify_the_broadcast_weights() -> None:
    w0 = global_weights()
    w0.setflags(write=False)  # as the object store hands it over
    copy = w0.copy()
    participant().fit(w0, ins())
    np.testing.assert_array_equal(w0, copy)


def test_fedprox_large_mu_keeps_the_update_near_the_global_model() -> None:
    data, w0 = client_data(n_train=40), global_weights()
    common = {"batch_size": 4, "epochs": 5}
    free = participant(data, **common).fit(w0, ins())
    # lr * mu = 0.9 < 2: the proximal pull is strong but SGD stays stable.
    prox = participant(data, proximal_mu=9.0, **common).fit(w0, ins())
    # Measured: 0.21 vs 2.55; the pull bounds |delta| near |grad| / mu.
    assert np.linalg.norm(prox.delta) < 0.2 * np.linalg.norm(free.delta)
    assert np.linalg.norm(prox.delta) > 0


def test_fedprox_first_step_has_no_proximal_pull() -> None:
    # At w = w0 the proximal gradient mu (w - w0) is zero, so one step equals plain SGD.
    data, w0 = client_data(), global_weights()
    plain = participant(data).fit(w0, ins())
    prox = participant(data, proximal_mu=100.0).fit(w0, ins())
    np.testing.assert_allclose(prox.delta, plain.delta, atol=1e-7, rtol=0)


def test_plain_sgd_carries_no_state() -> None:
    assert participant().fit(global_weights(), ins()).state is None
    assert not LocalTraining(epochs=1, batch_size=1, lr=0.1).stateful
    assert LocalTraining(epochs=1, batch_size=1, lr=0.1, optimizer="adam").stateful


def test_momentum_state_is_bytes_and_continues_the_momentum_buffer() -> None:
    data, w0 = client_data(), global_weights()
    p = participant(data, momentum=0.9)
    first = p.fit(w0, ins())
    assert isinstance(first.state, bytes) and len(first.state) > 0
    fresh = p.fit(w0, ins())
    resumed = p.fit(w0, ins(state=first.state))
    # Without state: one heavy-ball step from an empty buffer is plain SGD.
    grad, _ = full_batch_grad(w0, data)
    np.testing.assert_allclose(fresh.delta, -LR * grad, atol=1e-6, rtol=0)
    # With state: the buffer was g, so b' = 0.9 g + g and the step is -lr * 1.9 g.
    np.testing.assert_allclose(resumed.delta, -LR * 1.9 * grad, atol=1e-6, rtol=0)


def test_adam_state_round_trips() -> None:
    data, w0 = client_data(), global_weights()
    p = participant(data, optimizer="adam", lr=0.01)
    first = p.fit(w0, ins())
    again = p.fit(w0, ins(state=first.state))
    # Adam's bias-corrected first step moves every weight with a gradient by ~lr.
    assert np.abs(first.delta).max() == pytest.approx(0.01, rel=1e-3)

    def steps(state: bytes | None) -> set[float]:
        assert state is not None
        carried = safe_format.loads(state)  # the participant's carried state, not a pickle
        loaded = torch.load(io.BytesIO(carried["optimizer"]), weights_only=True)["state"]
        return {float(s["step"]) for s in loaded.values()}

    # The carried state was loaded: its step counter continues from 1 to 2.
    assert steps(first.state) == {1.0}
    assert steps(again.state) == {2.0}
    assert steps(p.fit(w0, ins()).state) == {1.0}


def test_accounting_fields() -> None:
    data = client_data(n_train=24)
    res = participant(data).fit(global_weights(), ins())
    assert res.participant_id == 3
    assert res.server_round == 2
    assert res.num_examples == 24
    assert res.payload_bytes == len(pickle.dumps(res.delta, protocol=5))
    assert 4 * D <= res.payload_bytes <= 4 * D + 256


def test_num_examples_counts_train_rows_only() -> None:
    res = participant(client_data(n_train=7, n_val=30)).fit(global_weights(), ins())
    assert res.num_examples == 7


def test_evaluate_on_validation_split() -> None:
    data, w0 = client_data(n_val=12), global_weights()
    r = participant(data).evaluate(w0, server_round=4)
    model = build_model(SPEC)
    set_flat(model, w0)
    with torch.no_grad():
        logits = model(data.x_val)
    expected_acc = float((logits.argmax(1) == data.y_val).float().mean())
    assert (r.participant_id, r.server_round, r.num_examples) == (3, 4, 12)
    assert r.accuracy == pytest.approx(expected_acc, abs=1e-12)
    assert r.loss == pytest.approx(float(F.cross_entropy(logits, data.y_val)), rel=1e-6)


def test_local_training_from_config() -> None:
    from rayfed.config import Config

    cfg = Config()
    cfg = dataclasses.replace(cfg, fl=dataclasses.replace(cfg.fl, local_epochs=3, batch_size=7,
                                                          lr=0.2, momentum=0.5),
                              strategy=dataclasses.replace(cfg.strategy, proximal_mu=0.01))
    t = LocalTraining.from_config(cfg)
    assert t == LocalTraining(epochs=3, batch_size=7, lr=0.2, optimizer="sgd", momentum=0.5,
                              weight_decay=0.0, proximal_mu=0.01)
    assert t.stateful


@pytest.mark.parametrize("payload", [
    np.random.default_rng(0).normal(size=1000).astype(np.float32),
    np.full(7, np.nan, dtype=np.float32),
    np.zeros((3, 4)),
    np.arange(5)[::2],  # not contiguous: serialised for real
    {"indices": np.arange(3), "values": np.ones(3, dtype=np.float16)},
])
def test_serialized_bytes_is_the_pickled_size(payload: object) -> None:
    from rayfed.fl.participant import serialized_bytes

    assert serialized_bytes(payload) == len(pickle.dumps(payload, protocol=5))
