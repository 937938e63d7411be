"""preflight: one run reports every bad override of a command line, before Ray starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from rayfed.launch import preflight

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(autouse=True)
def _fresh_hydra() -> Iterator[None]:
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def test_reports_each_bad_override_at_once() -> None:
    problems = preflight(["strategy=nope", "partition.alpha=-1", "fl.clients_per_round=0",
                          "fl.rounds=abc"], config_dir=CONF)
    for key in ("strategy", "partition.alpha", "fl.clients_per_round", "fl.rounds"):
        assert any(p.startswith(f"{key}=") for p in problems), (key, problems)
    bad_group = next(p for p in problems if p.startswith("strategy="))
    assert "'nope'" in bad_group
    assert "fedavg" in bad_group  # the message lists the valid choices
    assert any(p.startswith("fl.rounds=abc") and "abc" in p for p in problems)


def test_rejected_group_choice_names_its_options() -> None:
    problems = preflight(["model=resnet", "dataset=imagenet"], config_dir=CONF)
    assert len(problems) == 2
    assert problems[0].startswith("model='resnet' is not one of ['cnn', 'cnn1d', 'custom', "
                                  "'logreg', 'mlp', 'resnet_gn']")
    assert problems[1].startswith("dataset='imagenet' is not one of")


@pytest.mark.parametrize("overrides", [
    [],
    ["experiment=hospitals"],
    ["experiment=cross_device"],
    ["strategy=krum", "fl.clients_per_round=5", "fl.min_clients=1"],
    ["dataset=mnist1d", "model=cnn1d", "partition=shards", "fl.lr=0.01"],
    ["fl.rounds=1,2,3"],  # a sweep is left to each multirun job's own check
], ids=lambda o: " ".join(o) or "defaults")
def test_valid_command_lines_have_no_problems(overrides: list[str]) -> None:
    assert preflight(overrides, config_dir=CONF) == []


def test_validation_runs_after_hydra_accepts_the_overrides() -> None:
    # Hydra composes this fine; only validate() knows Krum needs 2f+3 = 5 per round.
    problems = preflight(["strategy=krum", "fl.clients_per_round=4", "fl.min_clients=1"],
                         config_dir=CONF)
    assert len(problems) == 1
    assert problems[0].startswith("strategy.num_byzantine=1")


# Issue #9, I1: one command line with every class of config error.
ONE_OF_EACH = [
    "fl.rounds=abc",                       # wrong type
    "partition.alpha=-1",                  # out of range
    "adversary.fraction=1.5",              # out of range, in a section of its own
    "fl.nope=3",                           # unknown key
    "strategy=krum", "fl.clients_per_round=4", "fl.min_clients=1",  # incompatible: Krum 2f+3
    "adversary=gaussian", "compression=int8",                       # incompatible sections
]
EXPECTED_KEYS = ("fl.rounds=abc", "partition.alpha=", "adversary.fraction=", "fl.nope=3",
                 "strategy.num_byzantine=", "adversary='gaussian' cannot be combined with "
                 "compression='int8'")


def test_every_class_of_error_is_reported_at_once_naming_its_key() -> None:
    problems = preflight(ONE_OF_EACH, config_dir=CONF)
    for key in EXPECTED_KEYS:
        assert sum(p.startswith(key) for p in problems) == 1, (key, problems)
    assert len(problems) == len(EXPECTED_KEYS), problems
    assert "could not be converted to Integer" in next(p for p in problems
                                                       if p.startswith("fl.rounds=abc"))
    assert "`fl.nope` is not a configuration key" in next(p for p in problems if "fl.nope" in p)


def test_the_command_line_exits_2_before_ray_or_any_actor_starts(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    repo = CONF.parent
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",
                                                            "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(repo)
    proc = subprocess.run([sys.executable, str(repo / "jobs" / "federated.py"), *ONE_OF_EACH],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"invalid configuration ({len(EXPECTED_KEYS)} problem(s)); nothing was started" \
        in proc.stderr
    for key in EXPECTED_KEYS:
        assert f"  - {key}" in proc.stderr
    # Nothing ran: no Ray, no tracking store, no Hydra run directory.
    assert "Ray" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
