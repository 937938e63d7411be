"""The empirical audit flags halved noise and passes the correct mechanism."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from rayfed.audit import clopper_pearson_upper, epsilon_lower_bound, run_audit
from rayfed.config import AuditConfig, PrivacyConfig
from tests.conftest import small_config


def test_clopper_pearson_zero_successes_matches_closed_form():
    # With k = 0 the exact one-sided upper bound is 1 − α^(1/n).
    assert clopper_pearson_upper(0, 1000, confidence=0.95) == pytest.approx(
        1 - 0.05 ** (1 / 1000), rel=1e-6)


def test_lower_bound_of_a_perfect_and_a_useless_test():
    n = 10_000
    u = 1 - 0.05 ** (1 / n)
    assert epsilon_lower_bound(false_positives=0, false_negatives=0, n_out=n, n_in=n,
                               delta=1e-5, confidence=0.95) == pytest.approx(
        math.log((1 - 1e-5 - u) / u))
    assert epsilon_lower_bound(false_positives=n // 2, false_negatives=n // 2, n_out=n,
                               n_in=n, delta=1e-5, confidence=0.95) == 0.0


@pytest.fixture(scope="module")
def audit_cfg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    return small_config(tmp, privacy=PrivacyConfig(name="central_dp", noise_multiplier=3.0,
                                                   clipping_norm=1.0, delta=1e-5),
                        fl=dict(num_clients=10, clients_per_round=10, rounds=9, min_clients=1),
                        audit=AuditConfig(trials=150_000))


def test_audit_passes_the_correct_configuration(audit_cfg):
    out = run_audit(audit_cfg)
    assert not out["flagged"]
    assert 0 < out["epsilon_lower"] < out["epsilon_claimed"]
    saved = json.loads((Path(audit_cfg.output_dir) / "audit.json").read_text())
    assert saved["epsilon_claimed"] == pytest.approx(out["epsilon_claimed"])


def test_audit_flags_halved_noise(audit_cfg):
    broken = replace(audit_cfg, audit=replace(audit_cfg.audit, noise_scale=0.5))
    out = run_audit(broken)
    assert out["flagged"]
    assert out["epsilon_lower"] > out["epsilon_claimed"]
