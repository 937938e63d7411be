"""The round loop on a real local Ray: placements, aggregation, a participant that raises.

Crashes, quorum aborts, deadlines, replays and resume: tests/integration/test_faults.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from rayfed.fl.host import ParticipantHost
from rayfed.fl.orchestrator import Orchestrator
from rayfed.fl.rounds import participant_seed, select_participants
from rayfed.models import build_model, get_flat, spec_from_config
from rayfed.plan import resolve
from rayfed.types import FitIns
from tests.conftest import small_config

pytestmark = pytest.mark.usefixtures("ray_session")


def run(cfg):
    with Orchestrator(cfg) as orch:
        history = list(orch.rounds())
        return history, orch.weights.copy(), orch


def reference_weights(cfg) -> np.ndarray:
    """FedAvg computed in this process with the same participants and seeds."""
    host = ParticipantHost(resolve(cfg))
    spec = spec_from_config(cfg.model, input_shape=host._data.input_shape,
                            num_classes=host._data.num_classes)
    w = get_flat(build_model(spec, seed=cfg.seed))
    rng = np.random.default_rng([cfg.seed, 0x5E1EC7])
    for rnd in range(1, cfg.fl.rounds + 1):
        ids = select_participants(rng, num_clients=cfg.fl.num_clients,
                                  k=cfg.fl.clients_per_round)
        res = host.fit(rnd, w, [FitIns(i, rnd, participant_seed(cfg.seed, rnd, i)) for i in ids])
        n = np.array([r.num_examples for r in res], dtype=np.float64)
        deltas = np.stack([r.delta for r in res]).astype(np.float64)
        w = (w + (n[:, None] * deltas).sum(0) / n.sum()).astype(np.float32)
    return w


def test_aggregate_equals_weighted_mean_in_every_placement(tmp_path):
    cfg = small_config(tmp_path, fl={"clients_per_round": 4, "min_clients": 4})
    expected = reference_weights(cfg)
    pooled = run(cfg)[1]
    pooled_plain = run(small_config(tmp_path, fl={"clients_per_round": 4, "min_clients": 4},
                                    runtime={"local_aggregation": False}))[1]
    dedicated = run(small_config(tmp_path, fl={"clients_per_round": 4, "min_clients": 4},
                                 runtime={"placement": "dedicated"}))[1]
    for got in (pooled, pooled_plain, dedicated):
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert not np.array_equal(expected, reference_weights(small_config(
        tmp_path, seed=1, fl={"clients_per_round": 4, "min_clients": 4})))


def test_participant_that_raises_does_not_stop_the_round(tmp_path):
    cfg = small_config(tmp_path, faults={"raise_clients": [2]})
    history, _, _ = run(cfg)
    for r in history:
        assert r.status == "completed"
        assert r.num_reported == 5 and r.num_failed == 1
        (failure,) = r.failures
        assert failure.participant_id == 2 and failure.kind == "error"
        assert "injected fault" in failure.reason


def test_federated_evaluation_is_the_weighted_mean_of_participants(tmp_path):
    cfg = small_config(tmp_path, fl={"rounds": 1, "federated_eval_every": 1})
    with Orchestrator(cfg) as orch:
        (r,) = list(orch.rounds())
        weights = orch.weights.copy()
    host = ParticipantHost(resolve(cfg))
    evals = host.evaluate(1, weights, list(range(6)))
    n = sum(e.num_examples for e in evals)
    expected = sum(e.accuracy * e.num_examples for e in evals) / n
    assert n > 0 and r.federated_accuracy == pytest.approx(expected, abs=1e-12)
