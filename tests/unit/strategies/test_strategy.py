"""Strategy: presets, parameter picking, order invariance, and state round trips."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from rayfed.errors import AggregationError, CheckpointError, ConfigError
from rayfed.strategies import (
    REDUCERS,
    SERVER_OPTIMIZERS,
    STRATEGY_PRESETS,
    Strategy,
    build_strategy,
)

# The values of StrategyConfig's fields (less proximal_mu, which is client-side).
DEFAULTS = {
    "server_lr": 1.0,
    "server_momentum": 0.0,
    "beta1": 0.9,
    "beta2": 0.99,
    "tau": 1e-3,
    "trim_ratio": 0.1,
    "num_byzantine": 1,
    "num_selected": 1,
}


def preset(name: str, **overrides: float) -> Strategy:
    return build_strategy(name=name, **STRATEGY_PRESETS[name], **{**DEFAULTS, **overrides})


def rounds(seed: int, num_rounds: int, k: int = 6, d: int = 5):
    rng = np.random.default_rng(seed)
    for _ in range(num_rounds):
        deltas = [rng.normal(size=d).astype(np.float32) for _ in range(k)]
        yield deltas, rng.integers(1, 50, size=k).tolist()


def test_presets():
    assert set(STRATEGY_PRESETS) == {
        "fedavg",
        "fedprox",
        "fedavgm",
        "fedadam",
        "fedyogi",
        "fedadagrad",
        "median",
        "trimmed_mean",
        "krum",
    }
    for pair in STRATEGY_PRESETS.values():
        assert pair["reducer"] in REDUCERS
        assert pair["server_optimizer"] in SERVER_OPTIMIZERS
    assert dict(STRATEGY_PRESETS["fedprox"]) == dict(STRATEGY_PRESETS["fedavg"])
    assert STRATEGY_PRESETS["fedadam"]["server_optimizer"] == "adam"


def test_fedavg_by_hand():
    # [0.5, 0.5] + ([1, 2] * 1 + [3, 4] * 3) / 4 = [0.5, 0.5] + [2.5, 3.5] = [3, 4]
    strategy = preset("fedavg")
    x = np.array([0.5, 0.5], dtype=np.float32)
    deltas = [np.array([1, 2], dtype=np.float32), np.array([3, 4], dtype=np.float32)]
    new_x = strategy.aggregate(x, deltas, [1, 3])
    np.testing.assert_array_equal(new_x, [3, 4])
    assert new_x.dtype == np.float32
    np.testing.assert_array_equal(x, [0.5, 0.5])  # input untouched


def test_fedavgm_by_hand():
    # lr 1, momentum 0.5, one participant: m1 = [2], x1 = [2]; m2 = 0.5*[2] + [2] = [3], x2 = [5]
    strategy = preset("fedavgm", server_momentum=0.5)
    x = np.zeros(1, dtype=np.float32)
    for expected in ([2.0], [5.0]):
        x = strategy.aggregate(x, [np.array([2], dtype=np.float32)], [10])
        np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("name", sorted(STRATEGY_PRESETS))
def test_every_preset_builds_and_aggregates(name):
    strategy = preset(name)
    assert strategy.name == name
    x = np.zeros(5, dtype=np.float32)
    for deltas, num_examples in rounds(0, 3):
        x = strategy.aggregate(x, deltas, num_examples)
    assert x.shape == (5,) and x.dtype == np.float32 and np.all(np.isfinite(x))
    assert strategy.state_dict()["step"] == 3


@pytest.mark.parametrize("name", sorted(STRATEGY_PRESETS))
def test_participant_order_does_not_matter(name):
    in_order, shuffled = preset(name), preset(name)
    x_a = x_b = np.zeros(5, dtype=np.float32)
    rng = np.random.default_rng(1)
    for deltas, num_examples in rounds(2, 3):
        perm = rng.permutation(len(deltas))
        x_a = in_order.aggregate(x_a, deltas, num_examples)
        x_b = shuffled.aggregate(x_b, [deltas[i] for i in perm], [num_examples[i] for i in perm])
        np.testing.assert_array_equal(x_a, x_b)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad", "krum"])
def test_state_dict_round_trip_gives_identical_next_steps(name):
    original = preset(name, server_momentum=0.9)
    x = np.zeros(5, dtype=np.float32)
    history = list(rounds(3, 4))
    for deltas, num_examples in history[:2]:
        x = original.aggregate(x, deltas, num_examples)

    state = pickle.loads(pickle.dumps(original.state_dict()))
    resumed = preset(name, server_momentum=0.9)
    resumed.load_state_dict(state)

    x_a = x_b = x
    for deltas, num_examples in history[2:]:
        x_a = original.aggregate(x_a, deltas, num_examples)
        x_b = resumed.aggregate(x_b, deltas, num_examples)
        np.testing.assert_array_equal(x_a, x_b)
    assert resumed.state_dict()["step"] == 4


def test_state_dict_is_plain_and_a_copy():
    strategy = preset("fedadam")
    strategy.aggregate(np.zeros(3, dtype=np.float32), [np.ones(3, dtype=np.float32)], [1])
    state = strategy.state_dict()
    assert set(state) == {"name", "reducer", "server_optimizer", "step", "m", "v"}
    assert type(state["step"]) is int and isinstance(state["m"], np.ndarray)
    state["m"][:] = 123.0  # must not reach the strategy
    assert not np.any(strategy.state_dict()["m"] == 123.0)


def test_load_state_dict_rejects_another_strategy():
    adam, yogi = preset("fedadam"), preset("fedyogi")
    with pytest.raises(CheckpointError, match="yogi"):
        yogi.load_state_dict(adam.state_dict())
    with pytest.raises(CheckpointError, match="missing"):
        adam.load_state_dict({"reducer": "weighted_mean"})


def test_build_strategy_passes_each_part_only_its_params():
    adagrad = preset("fedadagrad")
    assert set(adagrad.optimizer_params) == {"lr", "beta1", "tau"}
    assert adagrad.reducer_params == {}
    adam = preset("fedadam")
    assert adam.optimizer_params == {"lr": 1.0, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    assert preset("fedavg").optimizer_params == {"lr": 1.0, "momentum": 0.0}
    assert preset("krum").reducer_params == {"num_byzantine": 1, "num_selected": 1}
    assert preset("trimmed_mean").reducer_params == {"trim_ratio": 0.1}
    assert preset("median").reducer_params == {}


def test_invalid_settings_are_reported_together():
    with pytest.raises(ConfigError) as info:
        build_strategy(
            name="custom",
            reducer="trimmed_mean",
            server_optimizer="adam",
            **{**DEFAULTS, "trim_ratio": 0.7, "server_lr": -1.0, "tau": 0.0},
        )
    problems = info.value.problems
    assert len(problems) == 3
    joined = " ".join(problems)
    for key in ("strategy.trim_ratio", "strategy.server_lr", "strategy.tau"):
        assert key in joined


def test_unknown_names_and_params_are_reported():
    with pytest.raises(ConfigError) as info:
        Strategy("mode", "lbfgs")
    assert len(info.value.problems) == 2
    with pytest.raises(ConfigError) as info:
        Strategy("median", "sgd", reducer_params={"trim_ratio": 0.1}, optimizer_params={})
    joined = " ".join(info.value.problems)
    assert "'trim_ratio'" in joined and "'lr'" in joined


def test_default_name():
    assert Strategy("median", "sgd", optimizer_params={"lr": 1.0}).name == "median+sgd"


@pytest.mark.parametrize(
    ("deltas", "num_examples", "match"),
    [
        ([], [], "no deltas"),
        ([np.zeros(3)], [1, 2], "one num_examples per delta"),
        ([np.zeros(3), np.zeros(4)], [1, 1], r"positions \[1\]"),
    ],
)
def test_aggregate_rejects_bad_inputs(deltas, num_examples, match):
    with pytest.raises(AggregationError, match=match):
        preset("fedavg").aggregate(np.zeros(3, dtype=np.float32), deltas, num_examples)


def test_krum_strategy_rejects_too_few_participants():
    strategy = preset("krum", num_byzantine=2)
    deltas = [np.zeros(3, dtype=np.float32)] * 6
    with pytest.raises(AggregationError, match=r"strategy\.num_byzantine"):
        strategy.aggregate(np.zeros(3, dtype=np.float32), deltas, [1] * 6)


def test_failed_aggregation_leaves_state_unchanged():
    strategy = preset("fedadam")
    x = strategy.aggregate(np.zeros(3, dtype=np.float32), [np.ones(3, dtype=np.float32)], [1])
    before = strategy.state_dict()
    with pytest.raises(AggregationError):
        strategy.aggregate(x, [np.ones(3, dtype=np.float32)], [0])
    after = strategy.state_dict()
    assert after["step"] == before["step"]
    np.testing.assert_array_equal(after["m"], before["m"])
