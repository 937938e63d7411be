"""Issue #9, B1: Byzantine attacks on a real local Ray, FedAvg vs a robust rule.

The setting is the published table's (``benchmarks/robustness.py``,
docs/reliability.md "Adversaries"): digits, 20 participants all in every round,
4 of them (20 %) malicious, 10 rounds. Each attack must hurt FedAvg by at least
a margin set well inside the measured drop, and the coordinate-wise median must
stay within 5 points of clean FedAvg.

Margins (points of test accuracy; drops measured over seeds 0-2, per seed
table in docs/reliability.md): sign flipping ×4 and model replacement drive
FedAvg to chance or below (drops of 72-92), so 50; Gaussian noise costs 14-19,
so 8; label flipping costs 3.9-5.8, so 3, still above the 0.8 points that
seeds move clean FedAvg (91.4-92.2 %). This test runs seed 0, where the drops
are 72.2, 81.9, 15.0 and 5.8 and the median's worst is 3.3 below clean.
ALIE at the paper's z_max (0.385 for 20 with 4 attackers) hides inside the
honest spread and does not hurt FedAvg or the median measurably here; the test
states that honestly instead of strengthening the attack.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.robustness import ROUNDS, config, run_one

pytestmark = pytest.mark.usefixtures("ray_session")

WITHIN = 0.05  # the "within 5 points of clean"


def accuracy(tmp: Path, attack: str, aggregator: str) -> float:
    result = run_one(config(attack, aggregator, rounds=ROUNDS, tmp=str(tmp)))
    assert result["status"] == "FINISHED"
    acc: float = result["accuracy"]
    return acc


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> float:
    acc = accuracy(tmp_path_factory.mktemp("clean"), "none", "fedavg")
    assert acc >= 0.88  # measured 0.919 (seed 0); the task is learnt
    return acc


@pytest.mark.parametrize("attack, min_drop", [
    ("sign_flip", 0.50),
    ("scaling", 0.50),
    ("gaussian", 0.08),
    ("label_flip", 0.03),
])
def test_attack_hurts_fedavg_and_the_median_holds(tmp_path: Path, clean: float, attack: str,
                                                  min_drop: float) -> None:
    fedavg = accuracy(tmp_path, attack, "fedavg")
    median = accuracy(tmp_path, attack, "median")
    assert clean - fedavg >= min_drop, (clean, fedavg)
    assert median >= clean - WITHIN, (clean, median)


def test_alie_at_the_papers_z_max_goes_unnoticed_and_does_no_harm_here(
        tmp_path: Path, clean: float) -> None:
    fedavg = accuracy(tmp_path, "alie", "fedavg")
    median = accuracy(tmp_path, "alie", "median")
    assert abs(fedavg - clean) <= 0.02, (clean, fedavg)
    assert median >= clean - WITHIN, (clean, median)
