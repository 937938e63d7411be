"""Typed config: Hydra composition of every YAML, validation, hashing, selection size."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rayfed.config import (
    CheckpointConfig,
    Config,
    FLConfig,
    RuntimeConfig,
    StrategyConfig,
    TrackingConfig,
    clients_per_round,
    config_hash,
    register_configs,
    to_config,
    validate,
)

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("dataset", "model", "partition", "strategy", "experiment")


def _group_choices() -> list[tuple[str, str]]:
    return [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.fixture(autouse=True)
def _fresh_hydra() -> Iterator[None]:
    GlobalHydra.instance().clear()
    register_configs()
    yield
    GlobalHydra.instance().clear()


def compose_config(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def test_default_config_composes_to_typed_values_and_validates() -> None:
    cfg = compose_config()
    assert isinstance(cfg, Config)
    assert validate(cfg) == []
    # Values come from conf/config.yaml and the default group choices, not the schema.
    assert (cfg.dataset.name, cfg.model.name, cfg.partition.name, cfg.strategy.name) == (
        "digits", "mlp", "dirichlet", "fedavg")
    assert cfg.fl.num_clients == 20
    assert cfg.fl.min_clients == 5
    assert cfg.fl.rounds == 50
    assert cfg.fl.lr == 0.1
    assert isinstance(cfg.fl, FLConfig)


def test_every_group_has_yaml_files() -> None:
    found = {g for g, _ in _group_choices()}
    assert found == set(GROUPS)


@pytest.mark.parametrize(("group", "option"), _group_choices(),
                         ids=[f"{g}={o}" for g, o in _group_choices()])
def test_every_yaml_composes_and_validates(group: str, option: str) -> None:
    # The user's parts have no defaults: a site file template, a model's import path.
    needs = {"dataset=files": ["dataset.train_path='/d/site_{participant_id}.csv'",
                               "dataset.numeric=[age]", "dataset.classes=[no,yes]"],
             "model=custom": ["model._target_=torch.nn.Identity"]}
    cfg = compose_config(f"{group}={option}", *needs.get(f"{group}={option}", []))
    assert validate(cfg) == []
    if group == "experiment":
        assert cfg.name == option
    else:
        assert getattr(cfg, group).name == option


def test_experiment_overlay_overrides_group_defaults() -> None:
    cfg = compose_config("experiment=hospitals")
    assert cfg.dataset.name == "breast_cancer"
    assert cfg.partition.name == "iid"
    assert cfg.model.hidden_sizes == [32]
    assert cfg.fl.num_clients == 5
    assert cfg.runtime.placement == "dedicated"


def test_validate_reports_every_problem_naming_each_key() -> None:
    cfg = compose_config("partition.alpha=-1", "fl.clients_per_round=0", "fl.lr=0")
    problems = validate(cfg)
    for key in ("partition.alpha", "fl.clients_per_round", "fl.lr"):
        assert sum(p.startswith(key) for p in problems) == 1, (key, problems)
    # The quorum cannot exceed a round of zero participants either.
    assert any(p.startswith("fl.min_clients") for p in problems)
    assert len(problems) == 4


def test_validate_rejects_unknown_registry_names() -> None:
    cfg = Config()
    cfg.model.name = "resnet"
    cfg.strategy.reducer = "mode"
    problems = validate(cfg)
    assert len(problems) == 2
    assert problems[0].startswith("model='resnet' is not one of")
    assert problems[1].startswith("strategy.reducer='mode' is not one of")


def test_krum_with_too_few_participants_per_round_names_num_byzantine() -> None:
    # Krum with f=1 needs 2f+3 = 5 per round; 4 is one short.
    cfg = compose_config("strategy=krum", "fl.clients_per_round=4", "fl.min_clients=1")
    problems = validate(cfg)
    assert len(problems) == 1
    assert problems[0].startswith("strategy.num_byzantine=1")
    assert "2f+3=5" in problems[0]
    assert "selects 4" in problems[0]
    assert validate(compose_config("strategy=krum", "fl.clients_per_round=5",
                                   "fl.min_clients=1")) == []


def test_both_selection_settings_set_is_a_problem() -> None:
    cfg = Config(fl=FLConfig(clients_per_round=10, client_fraction=0.5, min_clients=1))
    problems = validate(cfg)
    assert len(problems) == 1
    assert "fl.clients_per_round and fl.client_fraction" in problems[0]


def test_config_hash_is_stable_and_short_hex() -> None:
    h = config_hash(Config())
    assert h == config_hash(Config())
    assert len(h) == 16
    int(h, 16)


def test_config_hash_of_composed_config_is_reproducible() -> None:
    assert config_hash(compose_config()) == config_hash(compose_config())


@pytest.mark.parametrize("change", [
    {"runtime": RuntimeConfig(placement="dedicated", num_cpus=3, pool_size=2)},
    {"tracking": TrackingConfig(enabled=False, experiment="other")},
    {"checkpoint": CheckpointConfig(enabled=False, dir="/elsewhere", keep_last=9)},
    {"output_dir": "/tmp/out"},
    {"resume": True},
], ids=["runtime", "tracking", "checkpoint", "output_dir", "resume"])
def test_config_hash_ignores_settings_that_do_not_change_the_trajectory(change: dict) -> None:
    base = Config()
    assert config_hash(dataclasses.replace(base, **change)) == config_hash(base)


def test_config_hash_ignores_fl_rounds() -> None:
    base = Config()
    longer = dataclasses.replace(base, fl=dataclasses.replace(base.fl, rounds=500))
    assert config_hash(longer) == config_hash(base)


def test_config_hash_changes_with_seed_lr_and_strategy() -> None:
    base = Config()
    variants = [
        dataclasses.replace(base, seed=1),
        dataclasses.replace(base, fl=dataclasses.replace(base.fl, lr=0.051)),
        dataclasses.replace(base, strategy=StrategyConfig(proximal_mu=0.01)),
    ]
    hashes = {config_hash(v) for v in variants}
    assert config_hash(base) not in hashes
    assert len(hashes) == len(variants)


@pytest.mark.parametrize(("num_clients", "per_round", "fraction", "expected"), [
    (20, 7, None, 7),          # an explicit count wins
    (20, None, 0.25, 5),       # 0.25 * 20 = 5 exactly
    (20, None, 0.26, 6),       # ceil(5.2) = 6
    (20, None, 0.01, 1),       # ceil(0.2) = 1: never zero
    (1000, None, 0.001, 1),
    (20, None, None, 20),      # neither set: everyone
])
def test_clients_per_round(num_clients: int, per_round: int | None, fraction: float | None,
                           expected: int) -> None:
    fl = FLConfig(num_clients=num_clients, clients_per_round=per_round, client_fraction=fraction)
    assert clients_per_round(fl) == expected


def test_client_fraction_composes_with_null_count() -> None:
    cfg = compose_config("fl.clients_per_round=null", "fl.client_fraction=0.5")
    assert clients_per_round(cfg.fl) == 10
    assert validate(cfg) == []


def test_to_config_rejects_a_config_without_the_schema() -> None:
    from omegaconf import OmegaConf

    from rayfed.errors import ConfigError

    with pytest.raises(ConfigError, match="base_config"):
        to_config(OmegaConf.create({"fl": {"rounds": 3}}))
