"""Server optimizers: hand-computed trajectories, purity, and a contract over the registry."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rayfed.errors import AggregationError
from rayfed.strategies.server_opt import (
    SERVER_OPTIMIZERS,
    ServerOptState,
    adagrad_step,
    adam_step,
    sgd_step,
    yogi_step,
)

PARAMS = {
    "sgd": {"lr": 0.5, "momentum": 0.9},
    "adam": {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
    "yogi": {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
    "adagrad": {"lr": 0.1, "beta1": 0.9, "tau": 1e-3},
}


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def run(step, x0, deltas, **params):
    """The weights after each step, starting from a fresh state."""
    x, state, trajectory = x0, ServerOptState(), []
    for delta in deltas:
        x, state = step(x, delta, state, **params)
        trajectory.append(x)
    return trajectory, state


def test_every_optimizer_has_params():
    assert set(PARAMS) == set(SERVER_OPTIMIZERS)


# --- hand-computed values -----------------------------------------------------------


def test_sgd_by_hand():
    # [1, 2] + 0.5 * [0.5, -1] = [1.25, 1.5]
    x, state = sgd_step(f32(1, 2), f32(0.5, -1), ServerOptState(), lr=0.5)
    np.testing.assert_array_equal(x, [1.25, 1.5])
    assert state.step == 1 and state.m is None and state.v is None


def test_fedavgm_by_hand():
    # momentum 0.9, lr 1, x0 = [1, 2]
    # step 1: m = [0.5, -1];                           x = [1.5, 1]
    # step 2: m = 0.9 * [0.5, -1] + [1, 1] = [1.45, 0.1]; x = [2.95, 1.1]
    (x1, x2), state = run(sgd_step, f32(1, 2), [f32(0.5, -1), f32(1, 1)], lr=1.0, momentum=0.9)
    np.testing.assert_allclose(x1, [1.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(x2, [2.95, 1.1], rtol=1e-6)
    np.testing.assert_allclose(state.m, [1.45, 0.1], rtol=1e-6)
    assert state.step == 2


def test_adam_by_hand():
    # lr 1, beta1 = beta2 = 0.5, tau 1: m0 = 0, v0 = tau^2 = 1, x0 = [0, 0]
    # step 1, delta [7, 1]:  m = 0.5 * [7, 1]             = [3.5, 0.5]
    #                        v = 0.5 * 1 + 0.5 * [49, 1]  = [25, 1]
    #                        x = m / (sqrt v + 1)         = [3.5 / 6, 0.5 / 2] = [7/12, 1/4]
    # step 2, delta [-5, 1]: m = 0.5 * m + 0.5 * delta    = [-0.75, 0.75]
    #                        v = 0.5 * v + 0.5 * [25, 1]  = [25, 1]
    #                        x += m / (sqrt v + 1)        = [7/12 - 1/8, 1/4 + 3/8] = [11/24, 5/8]
    params = {"lr": 1.0, "beta1": 0.5, "beta2": 0.5, "tau": 1.0}
    (x1, x2), state = run(adam_step, f32(0, 0), [f32(7, 1), f32(-5, 1)], **params)
    np.testing.assert_allclose(x1, [7 / 12, 1 / 4], rtol=1e-6)
    np.testing.assert_allclose(x2, [11 / 24, 5 / 8], rtol=1e-6)
    np.testing.assert_allclose(state.m, [-0.75, 0.75], rtol=1e-6)
    np.testing.assert_allclose(state.v, [25, 1], rtol=1e-6)


def test_yogi_by_hand():
    # lr 1, beta1 = beta2 = 0.5, tau 1: m0 = 0, v0 = 1, x0 = [0, 0]
    # step 1, delta [4, 4]:  m = [2, 2]
    #                        delta^2 = 16 > v: v = 1 + 0.5 * 16 = 9   (Adam would give 8.5)
    #                        x = 2 / (3 + 1) = 0.5
    # step 2, delta [12, 2]: m = 0.5 * [2, 2] + 0.5 * [12, 2] = [7, 2]
    #                        coord 0: 144 > 9, v = 9 + 0.5 * 144 = 81
    #                        coord 1: 4 < 9,   v = 9 - 0.5 * 4   = 7
    #                        x = [0.5 + 7 / (9 + 1), 0.5 + 2 / (sqrt 7 + 1)]
    #                          = [1.2, 0.5 + 2 / 3.6457513] = [1.2, 1.0485837]
    params = {"lr": 1.0, "beta1": 0.5, "beta2": 0.5, "tau": 1.0}
    (x1, x2), state = run(yogi_step, f32(0, 0), [f32(4, 4), f32(12, 2)], **params)
    np.testing.assert_allclose(x1, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(x2, [1.2, 1.0485837], rtol=1e-6)
    np.testing.assert_allclose(state.v, [81, 7], rtol=1e-6)
    np.testing.assert_allclose(state.m, [7, 2], rtol=1e-6)


def test_adagrad_by_hand():
    # lr 1, beta1 0.5, tau 0.75: m0 = 0, v0 = 0.5625, x0 = [1, -1]
    # step 1, delta [1, -1]: m = [0.5, -0.5]; v = 0.5625 + 1 = 1.5625 (sqrt 1.25)
    #                        x = 1 + 0.5 / (1.25 + 0.75) = 1.25, and -1.25
    # step 2, delta [3, -3]: m = 0.25 + 1.5 = 1.75; v = 1.5625 + 9 = 10.5625 (sqrt 3.25)
    #                        x = 1.25 + 1.75 / (3.25 + 0.75) = 1.6875, and -1.6875
    params = {"lr": 1.0, "beta1": 0.5, "tau": 0.75}
    (x1, x2), state = run(adagrad_step, f32(1, -1), [f32(1, -1), f32(3, -3)], **params)
    np.testing.assert_array_equal(x1, [1.25, -1.25])  # all exact in binary
    np.testing.assert_array_equal(x2, [1.6875, -1.6875])
    np.testing.assert_array_equal(state.v, [10.5625, 10.5625])


# --- properties ------------------------------------------------------------------------

vectors = hnp.arrays(np.float32, st.integers(1, 8), elements=st.floats(-1e3, 1e3, width=32))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_sgd_with_lr_1_is_exactly_fedavg(data):
    x = data.draw(vectors)
    delta = data.draw(hnp.arrays(np.float32, x.shape, elements=st.floats(-1e3, 1e3, width=32)))
    new_x, _ = sgd_step(x, delta, ServerOptState(), lr=1.0, momentum=0.0)
    np.testing.assert_array_equal(new_x, x + delta)


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMIZERS))
def test_server_optimizer_contract(name):
    step, params = SERVER_OPTIMIZERS[name], PARAMS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=5).astype(np.float32)
    delta = rng.normal(size=5).astype(np.float32)
    x_before, delta_before = x.copy(), delta.copy()
    state = ServerOptState()

    new_x, new_state = step(x, delta, state, **params)

    assert new_x.shape == x.shape and new_x.dtype == np.float32
    assert new_state.step == 1
    np.testing.assert_array_equal(x, x_before)  # pure: inputs untouched
    np.testing.assert_array_equal(delta, delta_before)
    assert state.step == 0 and state.m is None and state.v is None
    for moment in (new_state.m, new_state.v):
        if moment is not None:
            assert moment.shape == x.shape and not moment.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        new_state.step = 5  # type: ignore[misc]

    # A step moves along +delta: the delta is a descent direction.
    assert np.all(np.sign(new_x - x) == np.sign(delta))
    # The same inputs give the same step; a second step continues from the new state.
    again_x, _ = step(x, delta, state, **params)
    np.testing.assert_array_equal(again_x, new_x)
    _, state2 = step(new_x, delta, new_state, **params)
    assert state2.step == 2

    # A zero update from a fresh state leaves the weights alone.
    zero_x, _ = step(x, np.zeros_like(x), ServerOptState(), **params)
    np.testing.assert_array_equal(zero_x, x)


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMIZERS))
def test_rejects_mismatched_shapes(name):
    step, params = SERVER_OPTIMIZERS[name], PARAMS[name]
    with pytest.raises(AggregationError, match="same length"):
        step(np.zeros(3), np.zeros(4), ServerOptState(), **params)


@pytest.mark.parametrize("name", ["adam", "yogi", "adagrad"])
def test_rejects_state_of_another_model(name):
    step, params = SERVER_OPTIMIZERS[name], PARAMS[name]
    _, state = step(np.zeros(3), np.ones(3), ServerOptState(), **params)
    with pytest.raises(AggregationError, match="ServerOptState"):
        step(np.zeros(4), np.ones(4), state, **params)


def test_rejects_non_finite_delta():
    with pytest.raises(AggregationError, match="NaN"):
        sgd_step(np.zeros(2), f32(1, math.nan), ServerOptState(), lr=1.0)


def test_reports_every_bad_hyperparameter_at_once():
    with pytest.raises(AggregationError) as info:
        adam_step(np.zeros(2), np.ones(2), ServerOptState(), lr=0, beta1=1.0, beta2=-0.1, tau=0)
    message = str(info.value)
    for key in ("strategy.server_lr", "strategy.beta1", "strategy.beta2", "strategy.tau"):
        assert key in message


def test_rejects_bad_momentum():
    with pytest.raises(AggregationError, match=r"strategy\.server_momentum"):
        sgd_step(np.zeros(2), np.ones(2), ServerOptState(), lr=1.0, momentum=1.0)


@settings(max_examples=50, deadline=None)
@given(
    deltas=st.lists(
        hnp.arrays(np.float32, 3, elements=st.floats(-1e3, 1e3, width=32)), min_size=1, max_size=10
    )
)
def test_yogi_second_moment_stays_positive(deltas):
    x, state = np.zeros(3, dtype=np.float32), ServerOptState()
    for delta in deltas:
        x, state = yogi_step(x, delta, state, lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    assert np.all(state.v > 0)
    assert np.all(np.isfinite(x))
