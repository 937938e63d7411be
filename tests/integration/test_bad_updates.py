"""Issue #9, I2: malformed updates through real rounds on a local Ray.

A malicious participant (``adversary.name=<malformed mode>``) sends each kind of
bad update. It must be rejected, counted in the round's metrics and logged; the
round completes; and the new global model is exactly FedAvg over the good
updates, computed here in-process as the reference.
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
from rayfed.tracking import NullTracker
from rayfed.types import FitIns, FitRes
from tests.conftest import small_config

pytestmark = pytest.mark.usefixtures("ray_session")

BAD = 2


class Recorder(NullTracker):
    """A Tracker that keeps the metrics in memory."""

    def __init__(self) -> None:
        self.metrics: dict[int, Mapping[str, float]] = {}

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        self.metrics[step] = dict(metrics)


def good_mean(cfg) -> np.ndarray:
    """Round 1's global model from every participant but ``BAD``, in this process."""
    host = ParticipantHost(cfg)
    spec = spec_from_config(cfg.model, input_shape=host._data.input_shape,
                            num_classes=host._data.num_classes)
    w = get_flat(build_model(spec, seed=cfg.seed))
    ids = [i for i in range(cfg.fl.num_clients) if i != BAD]
    res = host.fit(1, w, [FitIns(i, 1, participant_seed(cfg.seed, 1, i)) for i in ids])
    assert all(isinstance(r, FitRes) for r in res)
    n = np.array([r.num_examples for r in res], dtype=np.float64)
    deltas = np.stack([r.delta for r in res]).astype(np.float64)
    return (w + (n[:, None] * deltas).sum(0) / n.sum()).astype(np.float32)


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> np.ndarray:
    return good_mean(small_config(tmp_path_factory.mktemp("ref"), fl={"rounds": 1}))


def one_round(tmp_path, mode: str, **runtime) -> tuple[Orchestrator, Recorder]:
    cfg = small_config(tmp_path, fl={"rounds": 1},
                       adversary={"name": mode, "clients": [BAD]}, runtime=runtime)
    tracker = Recorder()
    with Orchestrator(cfg, tracker=tracker) as orch:
        list(orch.rounds())
    return orch, tracker


REASONS = {
    "nan": "non-finite", "inf": "non-finite", "missing_tensor": "missing or extra tensor",
    "extra_tensor": "missing or extra tensor", "wrong_shape": "expected a flat vector",
    "wrong_dtype": "dtype float64", "zero_examples": "must be > 0",
    "negative_examples": "must be > 0", "excess_examples": "exceeds the participant's shard",
    "huge_norm": "the round's median norm",
}


def test_every_mode_has_an_expected_reason() -> None:
    assert set(REASONS) == set(MALFORMED)


@pytest.mark.parametrize("mode", sorted(MALFORMED))
def test_bad_update_is_rejected_counted_and_logged_at_the_server(
        tmp_path, mode, expected, caplog) -> None:
    # Every update travels to the server on its own (no partial sums).
    with caplog.at_level(logging.WARNING, logger="rayfed.fl.orchestrator"):
        orch, tracker = one_round(tmp_path, mode, local_aggregation=False)
    (r,) = orch.history
    assert r.status == "completed"
    assert (r.num_reported, r.num_failed, r.num_rejected) == (5, 1, 1)
    (f,) = r.failures
    assert (f.participant_id, f.kind) == (BAD, "rejected")
    assert REASONS[mode] in f.reason
    assert tracker.metrics[1]["updates_rejected"] == 1
    assert any(f"participant {BAD}: update rejected" in m for m in caplog.messages)
    np.testing.assert_allclose(orch.weights, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["nan", "wrong_shape", "excess_examples", "huge_norm"])
def test_bad_update_never_enters_a_partial_sum(tmp_path, mode, expected) -> None:
    # Pooled actors pre-aggregate; the host screens before summing.
    orch, tracker = one_round(tmp_path, mode, local_aggregation=True)
    (r,) = orch.history
    assert r.status == "completed" and (r.num_reported, r.num_rejected) == (5, 1)
    assert r.failures[0].participant_id == BAD and REASONS[mode] in r.failures[0].reason
    assert tracker.metrics[1]["updates_rejected"] == 1
    np.testing.assert_allclose(orch.weights, expected, atol=1e-6, rtol=0)


def test_robust_reducer_gets_only_good_updates(tmp_path) -> None:
    # Median with a wrong-shaped update would raise inside np.stack without screening.
    cfg = small_config(tmp_path, fl={"rounds": 1},
                       strategy={"name": "median", "reducer": "median"},
                       adversary={"name": "wrong_shape", "clients": [BAD]})
    with Orchestrator(cfg) as orch:
        (r,) = list(orch.rounds())
    assert r.status == "completed" and r.num_rejected == 1 and r.num_reported == 5
