"""Screening of reported updates (issue #9, I2): pure, no Ray."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rayfed.adversary import MALFORMED
from rayfed.fl.screening import UpdateSpec, examples_problem, norm_outliers, screen
from rayfed.types import Failure, FitRes, PartialAggregate

D = 50
SPEC = UpdateSpec(num_params=D, shard_sizes={i: 40 for i in range(8)})


def fit(pid: int, *, scale: float = 1.0, rnd: int = 3, n: int = 30) -> FitRes:
    delta = (np.random.default_rng(pid).normal(size=D) * scale).astype(np.float32)
    return FitRes(pid, rnd, delta, n, payload_bytes=4 * D)


def test_well_formed_updates_pass_untouched() -> None:
    results = [fit(i) for i in range(5)]
    assert screen(results, server_round=3, spec=SPEC) == results


@pytest.mark.parametrize("mode, reason", [
    ("nan", "1 non-finite values"),
    ("inf", "1 non-finite values"),
    ("missing_tensor", f"{D - 10} values, expected {D}"),
    ("extra_tensor", f"{D + 10} values, expected {D}"),
    ("wrong_shape", f"shape (1, {D}), expected a flat vector ({D},)"),
    ("wrong_dtype", "dtype float64, expected float32"),
    ("zero_examples", "num_examples=0 must be > 0"),
    ("negative_examples", "num_examples=-5 must be > 0"),
    ("excess_examples", "num_examples=30000 exceeds the participant's shard (40)"),
    ("huge_norm", "× the round's median norm"),
])
def test_each_malformed_update_is_rejected_with_its_reason(mode: str, reason: str) -> None:
    honest = [fit(i) for i in range(5)]
    bad = MALFORMED[mode](fit(5))
    out = screen([*honest, bad], server_round=3, spec=SPEC)
    assert out[:5] == honest
    assert len(out) == 6
    f = out[5]
    assert isinstance(f, Failure) and f.kind == "rejected" and f.participant_id == 5
    assert f.server_round == 3
    assert reason in f.reason, f.reason


def test_norm_limit_is_relative_to_the_median() -> None:
    norms = {0: 1.0, 1: 2.0, 2: 3.0, 3: 2000.0, 4: 2001.0}
    # median 3.0: 3000 is the limit; neither 2000 nor 2001 exceeds it.
    assert norm_outliers(norms, ratio=1000) == {}
    norms[5], norms[6] = 1.0, 1.0  # median now 2.0: limit 2000
    assert set(norm_outliers(norms, ratio=1000)) == {4}
    assert norm_outliers({0: 0.0, 1: 0.0, 2: 5.0}, ratio=1000) == {}  # median 0: no scale


def test_examples_checks() -> None:
    assert examples_problem(40, 40) is None
    assert examples_problem(np.int64(3), None) is None
    assert "exceeds" in (examples_problem(41, 40) or "")
    assert "not an integer" in (examples_problem(3.5, 40) or "")
    assert "not an integer" in (examples_problem(True, 40) or "")


def test_other_rounds_and_failures_pass_through_for_decide() -> None:
    late = replace(MALFORMED["nan"](fit(1)), server_round=2)
    failure = Failure(2, 3, "error", "boom")
    out = screen([late, failure, fit(0)], server_round=3, spec=SPEC)
    assert out[0] is late and out[1] is failure


def test_a_bad_partial_aggregate_rejects_each_of_its_participants() -> None:
    good = PartialAggregate(3, (0, 1), (30, 30), np.zeros(D), 8 * D, 1.0)
    bad = replace(good, participant_ids=(2, 3), num_examples=(30, 999))
    out = screen([good, bad], server_round=3, spec=SPEC)
    assert out[0] is good
    assert [(f.participant_id, f.kind) for f in out[1:]] == [(2, "rejected"), (3, "rejected")]
    assert all("num_examples=999 exceeds" in f.reason for f in out[1:])
    wrong = replace(good, weighted_sum=np.zeros(D + 1))
    assert [f.kind for f in screen([wrong], server_round=3, spec=SPEC)] == ["rejected"] * 2


def test_ciphertexts_are_checked_for_counts_only() -> None:
    # Under secure aggregation the session parsed the ciphertext already.
    encrypted = replace(SPEC, encrypted=True)
    opaque = replace(fit(0), delta=object())  # type: ignore[arg-type]
    assert screen([opaque], server_round=3, spec=encrypted) == [opaque]
    out = screen([replace(opaque, num_examples=0)], server_round=3, spec=encrypted)
    assert isinstance(out[0], Failure) and out[0].kind == "rejected"


@pytest.mark.parametrize("delta", [object(), [0.0] * D, np.zeros(D).tolist(),
                                   [float("nan")] * D])
def test_without_secure_aggregation_only_a_float32_array_passes(delta: object) -> None:
    # A Python list once skipped screening: a 10⁶× update was accepted, a NaN list
    # crashed the run (issue #15, item 10).
    out = screen([replace(fit(0), delta=delta)], server_round=3, spec=SPEC)  # type: ignore[arg-type]
    assert isinstance(out[0], Failure) and out[0].kind == "rejected"
    assert "expected a float32 numpy array" in out[0].reason
