"""Resuming a ``central_dp`` run for more rounds: the noise added is the noise charged.

The attack (issue #15, item 8; issue #14): with σ solved for a target ε and
``noise_placement=clients``, a resumed run that changes ``fl.rounds`` once had
participants add the σ of a fresh plan for the new round count while the ledger
charged the checkpoint's σ, so the ε in the summary was not the ε that was
spent. Here the participants' released noise is *measured*: local updates are
made negligible (lr 1e-12), so each round's change of the global weights is the
participants' summed noise over the fixed denominator, whose standard deviation
gives back the σ they actually used. It must equal the σ each ledger event
charges, and the summary's ε must be the ε of those events.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rayfed.config import CheckpointConfig, PrivacyConfig
from rayfed.fl.orchestrator import Orchestrator
from rayfed.privacy.accounting import epsilon
from tests.conftest import small_config

TARGET, C = 6.0, 1.0


def _cfg(tmp_path, rounds: int, resume: bool):
    return small_config(
        tmp_path, name="replan", resume=resume,
        privacy=PrivacyConfig(name="central_dp", target_epsilon=TARGET, clipping_norm=C,
                              noise_placement="clients"),
        fl=dict(num_clients=8, clients_per_round=4, min_clients=1, rounds=rounds, lr=1e-12),
        checkpoint=CheckpointConfig(enabled=True, dir=str(tmp_path / "ckpt")))


def _measured_sigmas(orch: Orchestrator) -> list[tuple[int, float]]:
    """(round, σ the participants used) per completed round, from the weights' change."""
    m = orch.plan.privacy.user.expected_clients
    out, before = [], orch.weights.copy()
    for r in orch.rounds():
        change = orch.weights.astype(np.float64) - before
        before = orch.weights.copy()
        if r.status == "completed" and r.num_reported:
            # Σ_k N(0, (σC/√m)²) / m has std σC·√k / m^1.5.
            out.append((r.server_round, float(change.std()) * m ** 1.5
                        / (C * math.sqrt(r.num_reported))))
    return out


def test_resume_with_more_rounds_adds_the_noise_the_ledger_charges(ray_session, tmp_path):
    with Orchestrator(_cfg(tmp_path, rounds=2, resume=False)) as first:
        sigma_first = first.plan.privacy.user.noise_multiplier
        for r, sigma in _measured_sigmas(first):
            assert sigma == pytest.approx(sigma_first, rel=0.06), r
    with Orchestrator(_cfg(tmp_path, rounds=8, resume=True)) as resumed:
        sigma_new = resumed.plan.privacy.user.noise_multiplier
        # Six more rounds under the same target need more noise per round.
        assert sigma_new > 1.15 * sigma_first
        measured = _measured_sigmas(resumed)
        summary = resumed.summary()
        events = resumed.privacy.user.ledger.events
    assert len(measured) >= 4
    charged = {e.server_round: e.noise_multiplier for e in events}
    for r, sigma in measured:
        assert charged[r] == pytest.approx(sigma_new)
        assert sigma == pytest.approx(charged[r], rel=0.06), r
    for e in events:  # rounds before the resume keep what they spent
        assert e.noise_multiplier == pytest.approx(sigma_first if e.server_round <= 2
                                                   else sigma_new)
    spent = epsilon(events, delta=resumed.plan.privacy.user.delta)
    assert summary["epsilon"] == pytest.approx(spent)
    assert spent <= TARGET + 1e-6
