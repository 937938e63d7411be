"""Issue #17: runs are named after their choices, not all `default`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rayfed.config import register_configs, to_config
from rayfed.naming import run_name

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(autouse=True)
def _fresh_hydra() -> Iterator[None]:
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def composed_name(overrides: list[str]) -> str:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_config(compose("config", overrides=overrides)).name


def test_run_name_joins_the_choices_and_the_privacy_mode_when_on() -> None:
    assert run_name("digits", "mlp", "fedavg") == "digits-mlp-fedavg"
    assert run_name("digits", "mlp", "fedavg", "none") == "digits-mlp-fedavg"
    assert run_name("mnist", "cnn", "fedprox", "local_dp") == "mnist-cnn-fedprox-local_dp"


@pytest.mark.parametrize(("overrides", "name"), [
    ([], "digits-mlp-fedavg"),
    (["strategy=fedprox", "model=logreg"], "digits-logreg-fedprox"),
    (["privacy=central_dp"], "digits-mlp-fedavg-central_dp"),
    (["dataset=breast_cancer", "privacy=local_dp"], "breast_cancer-mlp-fedavg-local_dp"),
    (["name=mine", "privacy=central_dp"], "mine"),
    (["experiment=hospitals"], "hospitals"),
])
def test_composed_default_name_derives_from_the_choices(overrides: list[str], name: str) -> None:
    assert composed_name(overrides) == name
