"""The round loop on a real local Ray: placements, failures, deadlines, quorum."""

from __future__ import annotations

import numpy as np
import pytest

from rayfed.fl.host import ParticipantHost
from rayfed.fl.orchestrator import Orchestrator
from rayfed.fl.rounds import participant_seed, select_participants
from rayfed.models import build_model, get_flat, spec_from_config
from rayfed.types import FitIns
from tests.conftest import small_config

pytestmark = pytest.mark.usefixtures("ray_session")


def run(cfg):
    with Orchestrator(cfg) as orch:
        history = list(orch.rounds())
        return history, orch.weights.copy(), orch


def reference_weights(cfg) -> np.ndarray:
    """FedAvg computed in this process with the same participants and seeds."""
    host = ParticipantHost(cfg)
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


def test_quorum_miss_aborts_and_leaves_the_model_unchanged(tmp_path):
    cfg = small_config(tmp_path, fl={"rounds": 1, "min_clients": 4},
                       faults={"raise_clients": [0, 1, 2]})
    with Orchestrator(cfg) as orch:
        before = orch.weights.copy()
        (r,) = list(orch.rounds())
        assert r.status == "aborted"
        assert "fl.min_clients=4" in r.reason and "3 of 6" in r.reason
        assert orch.weights.tobytes() == before.tobytes()
        assert orch.summary()["rounds_completed"] == 0


def test_late_participant_is_cut_at_the_deadline_and_its_update_rejected(tmp_path):
    timeout = 2.0
    cfg = small_config(tmp_path, fl={"num_clients": 4, "clients_per_round": 4,
                                     "min_clients": 2, "rounds": 4,
                                     "round_timeout_s": timeout},
                       runtime={"placement": "dedicated"},
                       faults={"slow_clients": [1], "slow_delay_s": 5.0, "rounds": [1]})
    history, _, _ = run(cfg)
    first = history[0]
    assert first.status == "completed" and first.num_reported == 3
    assert first.seconds < timeout * 1.1 + 0.3
    assert [f.kind for f in first.failures] == ["timeout"]
    assert first.failures[0].participant_id == 1
    # The round-1 update arrives later and is discarded by its round id.
    assert sum(r.num_late_rejected for r in history) == 1
    assert all(r.status == "completed" for r in history)


def test_crashed_actor_restarts_and_rejoins(tmp_path):
    cfg = small_config(tmp_path, fl={"num_clients": 4, "clients_per_round": 4,
                                     "min_clients": 3, "rounds": 2},
                       runtime={"placement": "dedicated", "max_restarts": 2},
                       faults={"crash_clients": [3], "rounds": [1]})
    history, _, _ = run(cfg)
    assert history[0].status == "completed" and history[0].num_reported == 3
    assert [(f.participant_id, f.kind) for f in history[0].failures] == [(3, "crash")]
    assert history[1].num_reported == 4 and history[1].num_failed == 0


def test_resume_continues_bit_identically(tmp_path):
    sections = dict(fl={"rounds": 4, "momentum": 0.9, "clients_per_round": 4},
                    strategy={"name": "fedadam", "server_optimizer": "adam",
                              "server_lr": 0.01},
                    checkpoint={"enabled": True})
    full = run(small_config(tmp_path / "a", **sections))[1]
    cut = small_config(tmp_path / "b", **{**sections, "fl": {**sections["fl"], "rounds": 2}})
    history, _, orch = run(cut)
    assert len(history) == 2 and orch.client_states  # momentum state was carried
    resumed_cfg = small_config(tmp_path / "b", resume=True, **sections)
    with Orchestrator(resumed_cfg) as orch:
        assert orch.next_round == 3
        rest = list(orch.rounds())
        resumed = orch.weights
    assert [r.server_round for r in rest] == [3, 4]
    assert resumed.tobytes() == full.tobytes()


def test_federated_evaluation_is_the_weighted_mean_of_participants(tmp_path):
    cfg = small_config(tmp_path, fl={"rounds": 1, "federated_eval_every": 1})
    with Orchestrator(cfg) as orch:
        (r,) = list(orch.rounds())
        weights = orch.weights.copy()
    host = ParticipantHost(cfg)
    evals = host.evaluate(1, weights, list(range(6)))
    n = sum(e.num_examples for e in evals)
    expected = sum(e.accuracy * e.num_examples for e in evals) / n
    assert n > 0 and r.federated_accuracy == pytest.approx(expected, abs=1e-12)
