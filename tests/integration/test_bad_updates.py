"""Issue #9, I2: malformed updates through real rounds on a local Ray.

Ten participants each send a different kind of bad update in the same round
(``adversary.malformed``: NaN, Inf, a missing or an extra tensor, a wrong shape
or dtype, ``num_examples`` 0, negative or beyond the shard, a norm 10⁴ × honest);
four send good ones. Every bad update must be rejected with its reason, counted
in the round's metrics and logged; the round completes; and the new global model
is exactly FedAvg over the good updates, computed here in-process as the
reference. The same with pooled pre-aggregation (hosts screen before summing)
and with the median.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pytest

from rayfed.adversary import MALFORMED
from rayfed.fl.host import ParticipantHost
from rayfed.fl.orchestrator import Orchestrator
from rayfed.fl.rounds import participant_seed
from rayfed.models import build_model, get_flat, spec_from_config
from rayfed.plan import resolve
from rayfed.tracking import NullTracker
from rayfed.types import FitIns, FitRes
from tests.conftest import small_config

pytestmark = pytest.mark.usefixtures("ray_session")

# Participant id -> mode: the first ids are bad, the last four good. Pooled actors get ids
# interleaved (evens / odds), so each actor holds two good updates, which sets
# the median norm its own screening compares `huge_norm` with.
MODES = dict(enumerate(sorted(MALFORMED)))
GOOD = list(range(len(MODES), len(MODES) + 4))
NUM_CLIENTS = len(MODES) + len(GOOD)


class Recorder(NullTracker):
    """A Tracker that keeps the metrics in memory."""

    def __init__(self) -> None:
        self.metrics: dict[int, Mapping[str, float]] = {}

    def log_metrics(self, metrics: Mapping[str, float], *, step: int,
                    durable: bool = False) -> None:
        self.metrics[step] = dict(metrics)


def cfg_for(tmp_path, **sections):
    return small_config(tmp_path, fl={"rounds": 1, "num_clients": NUM_CLIENTS,
                                      "clients_per_round": NUM_CLIENTS, "min_clients": 1},
                        **sections)


def good_mean(cfg) -> np.ndarray:
    """Round 1's global model from the good participants only, in this process."""
    host = ParticipantHost(resolve(cfg))
    spec = spec_from_config(cfg.model, input_shape=host._data.input_shape,
                            num_classes=host._data.num_classes)
    w = get_flat(build_model(spec, seed=cfg.seed))
    res = host.fit(1, w, [FitIns(i, 1, participant_seed(cfg.seed, 1, i)) for i in GOOD])
    assert all(isinstance(r, FitRes) for r in res)
    n = np.array([r.num_examples for r in res], dtype=np.float64)
    deltas = np.stack([r.delta for r in res]).astype(np.float64)
    return (w + (n[:, None] * deltas).sum(0) / n.sum()).astype(np.float32)


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> np.ndarray:
    return good_mean(cfg_for(tmp_path_factory.mktemp("ref")))


def one_round(tmp_path, **sections) -> tuple[Orchestrator, Recorder]:
    tracker = Recorder()
    with Orchestrator(cfg_for(tmp_path, adversary={"malformed": MODES}, **sections),
                      tracker=tracker) as orch:
        list(orch.rounds())
    return orch, tracker


REASONS = {
    "nan": "1 non-finite values", "inf": "1 non-finite values",
    "missing_tensor": "(a missing or extra tensor)", "extra_tensor": "(a missing or extra tensor)",
    "wrong_shape": "expected a flat vector", "wrong_dtype": "dtype float64, expected float32",
    "zero_examples": "num_examples=0 must be > 0",
    "negative_examples": "num_examples=-5 must be > 0",
    "excess_examples": "exceeds the participant's shard", "huge_norm": "the round's median norm",
    # Issue #15, item 10: a Python list once skipped screening (a 10⁶× update was
    # accepted, a NaN list crashed the run).
    "python_list": "a list, expected a float32 numpy array",
    "nan_list": "a list, expected a float32 numpy array",
}


def assert_each_bad_update_rejected(orch: Orchestrator, tracker: Recorder) -> None:
    (r,) = orch.history
    assert r.status == "completed"
    assert (r.num_reported, r.num_failed, r.num_rejected) == (len(GOOD), len(MODES),
                                                              len(MODES))
    got = {f.participant_id: f for f in r.failures}
    assert sorted(got) == sorted(MODES)
    for pid, mode in MODES.items():
        assert got[pid].kind == "rejected", (mode, got[pid])
        assert REASONS[mode] in got[pid].reason, (mode, got[pid].reason)
    assert tracker.metrics[1]["updates_rejected"] == len(MODES)


def test_every_mode_has_an_expected_reason() -> None:
    assert set(REASONS) == set(MALFORMED)


def test_bad_updates_are_rejected_counted_and_logged_at_the_server(
        tmp_path, expected, caplog) -> None:
    # Every update travels to the server on its own (no partial sums).
    with caplog.at_level(logging.WARNING, logger="rayfed.fl.orchestrator"):
        orch, tracker = one_round(tmp_path, runtime={"local_aggregation": False})
    assert_each_bad_update_rejected(orch, tracker)
    for pid in MODES:
        assert any(f"participant {pid}: update rejected" in m for m in caplog.messages)
    np.testing.assert_allclose(orch.weights, expected, atol=1e-6, rtol=0)


def test_bad_updates_never_enter_a_partial_sum(tmp_path, expected) -> None:
    # Pooled actors pre-aggregate; each host screens before summing.
    orch, tracker = one_round(tmp_path, runtime={"local_aggregation": True})
    assert_each_bad_update_rejected(orch, tracker)
    np.testing.assert_allclose(orch.weights, expected, atol=1e-6, rtol=0)


def test_robust_reducer_gets_only_good_updates(tmp_path) -> None:
    # Without screening a wrong-shaped update makes np.stack raise in the median.
    orch, tracker = one_round(tmp_path, strategy={"name": "median", "reducer": "median"})
    assert_each_bad_update_rejected(orch, tracker)
