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
    assert problems[0].startswith("model='resnet' is not one of ['cnn', 'cnn1d', 'logreg', "
                                  "'mlp']")
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
