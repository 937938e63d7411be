"""User-level DP-FedAvg on a local Ray: the budget stops the run, resume keeps ε."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from rayfed.config import PrivacyConfig
from rayfed.fl.orchestrator import Orchestrator
from rayfed.launch import run_federated
from rayfed.privacy.accounting import DpEvent, epsilon
from tests.conftest import small_config

Q, SIGMA, DELTA = 0.5, 1.0, 1e-3


def _central(**kw):
    base = dict(name="central_dp", noise_multiplier=SIGMA, clipping_norm=0.5, delta=DELTA)
    return PrivacyConfig(**{**base, **kw})


def _rounds_within(target: float) -> int:
    k = 0
    while epsilon([DpEvent(Q, SIGMA, k + 1)], delta=DELTA) <= target:
        k += 1
    return k


def test_small_target_stops_at_the_right_round(ray_session, tmp_path):
    target = 4.0
    expected = _rounds_within(target)
    assert 1 <= expected < 8
    cfg = small_config(tmp_path, privacy=_central(target_epsilon=target),
                       fl=dict(rounds=8, clients_per_round=3, min_clients=1),
                       checkpoint=dict(enabled=True),
                       tracking=dict(enabled=True, log_model=False))
    summary = run_federated(cfg, show_progress=False)
    assert summary["status"] == "budget_exhausted"
    # Only rounds that released a noised model are charged (an aborted round,
    # e.g. with nobody sampled, is not).
    assert summary["rounds_completed"] == expected
    assert summary["epsilon"] <= target
    assert summary["epsilon"] == pytest.approx(
        epsilon([DpEvent(Q, SIGMA, expected)], delta=DELTA))
    assert summary["noise_multiplier"] == SIGMA and summary["delta"] == DELTA
    ledger = json.loads((tmp_path / "privacy_ledger.json").read_text())
    assert len(ledger["events"]) == expected
    # MLflow: ε, δ, σ and C per round, and the ledger as an artifact.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    run_id = summary["mlflow_run_id"]
    eps = [m.value for m in sorted(client.get_metric_history(run_id, "epsilon"),
                                   key=lambda m: m.step)]
    assert len(eps) == expected and eps == sorted(eps) and eps[-1] == pytest.approx(
        summary["epsilon"])
    for key, value in (("delta", DELTA), ("noise_multiplier", SIGMA), ("clipping_norm", 0.5)):
        assert client.get_metric_history(run_id, key)[-1].value == pytest.approx(value)
    assert "privacy_ledger.json" in [a.path for a in client.list_artifacts(run_id)]


def test_resume_keeps_epsilon(ray_session, tmp_path):
    cfg = small_config(tmp_path, privacy=_central(),
                       fl=dict(rounds=2, clients_per_round=3, min_clients=1),
                       checkpoint=dict(enabled=True))
    with Orchestrator(cfg) as orch:
        for _ in orch.rounds():
            pass
        eps_two = orch.privacy.user.epsilon()
        weights = orch.weights.copy()
    assert eps_two == pytest.approx(epsilon([DpEvent(Q, SIGMA, 2)], delta=DELTA))
    resumed = replace(cfg, resume=True, fl=replace(cfg.fl, rounds=3))
    with Orchestrator(resumed) as orch:
        assert orch.privacy.user.epsilon() == pytest.approx(eps_two)
        np.testing.assert_array_equal(orch.weights, weights)
        results = list(orch.rounds())
        assert [r.server_round for r in results] == [3]
        assert [e.server_round for e in orch.privacy.user.ledger.events] == [1, 2, 3]
        assert orch.privacy.user.epsilon() == pytest.approx(
            epsilon([DpEvent(Q, SIGMA, 3)], delta=DELTA))


def test_record_level_run_reports_the_largest_participant_epsilon(ray_session, tmp_path):
    cfg = small_config(tmp_path, privacy=PrivacyConfig(name="local_dp", target_epsilon=8.0,
                                                       delta=1e-5),
                       fl=dict(rounds=2, clients_per_round=4))
    summary = run_federated(cfg, show_progress=False)
    assert summary["status"] == "FINISHED"
    assert 0 < summary["epsilon"] <= 8.0
    assert summary["delta"] == 1e-5 and summary["noise_multiplier"] > 0
    ledger = json.loads((tmp_path / "privacy_ledger.json").read_text())
    assert max(e["epsilon"] for e in ledger["events"]) == summary["epsilon"]


def test_record_level_run_stops_when_every_participant_has_spent_its_budget(ray_session,
                                                                           tmp_path):
    from rayfed.fl.host import ParticipantHost
    from rayfed.plan import resolve

    privacy = PrivacyConfig(name="local_dp", noise_multiplier=1.0, delta=1e-5)
    cfg = small_config(tmp_path, privacy=privacy, fl=dict(rounds=4))
    host = ParticipantHost(resolve(cfg))
    one, two = [], []
    for pid in range(cfg.fl.num_clients):
        plan = host._record_dp.plan(len(host.participant(pid).data.x_train))
        ev = DpEvent(plan.sample_rate, plan.noise_multiplier, plan.steps_per_round)
        one.append(epsilon([ev], delta=1e-5))
        two.append(epsilon([ev, ev], delta=1e-5))
    assert max(one) < min(two)
    target = (max(one) + min(two)) / 2  # every participant can afford exactly one round
    cfg = replace(cfg, privacy=replace(privacy, target_epsilon=target))
    summary = run_federated(cfg, show_progress=False)
    assert summary["status"] == "budget_exhausted"
    assert summary["rounds_completed"] == 1 and summary["rounds_aborted"] == 1
    assert summary["epsilon"] == pytest.approx(max(one))
