"""Validation of secure_agg and its combinations, and the Hydra config group."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rayfed.config import (
    Config,
    FLConfig,
    PrivacyConfig,
    SecureAggConfig,
    StrategyConfig,
    register_configs,
    to_config,
    validate,
)
from rayfed.launch import preflight
from rayfed.plan import build_pipeline, resolve

CONF = Path(__file__).resolve().parents[3] / "conf"


def ckks(**overrides) -> Config:
    return Config(fl=FLConfig(min_clients=2), secure_agg=SecureAggConfig(name="ckks",
                                                                        **overrides))


def test_defaults_are_valid_and_build_an_encrypt_stage_last():
    assert validate(ckks()) == []
    pipeline = build_pipeline(resolve(ckks()))
    assert pipeline.names[-1] == "encrypt" and pipeline.stages[-1].order == 3
    assert "encrypt" not in build_pipeline(resolve(Config())).names


@pytest.mark.parametrize("reducer", ["median", "trimmed_mean", "krum"])
def test_robust_reducers_are_rejected_with_the_reason(reducer):
    cfg = replace(ckks(), strategy=StrategyConfig(name=reducer, reducer=reducer))
    (msg,) = [m for m in validate(cfg) if "strategy.reducer" in m]
    assert f"strategy.reducer={reducer!r}" in msg and "encrypted sum" in msg


def test_every_secure_agg_problem_at_once():
    cfg = replace(ckks(coeff_mod_bit_sizes=[60, 60, 60, 60], min_participants=1,
                       encrypt_threads=0), fl=FLConfig(min_clients=1))
    joined = "\n".join(validate(cfg))
    for key in ("bound of 218 bits", "secure_agg.min_participants=1",
                "secure_agg.encrypt_threads=0"):
        assert key in joined


def test_central_dp_needs_client_side_noise():
    server = replace(ckks(), privacy=PrivacyConfig(name="central_dp",
                                                   noise_placement="server"))
    assert any("privacy.noise_placement=clients" in m for m in validate(server))
    clients = replace(server, privacy=replace(server.privacy, noise_placement="clients"))
    assert not any("noise_placement" in m for m in validate(clients))


def test_quorum_must_cover_the_decryptors_minimum():
    cfg = replace(ckks(), fl=FLConfig(min_clients=1))
    assert any("fl.min_clients=1 must be >= secure_agg.min_participants=2" in m
               for m in validate(cfg))


@pytest.mark.parametrize(("choice", "n"), [("ckks", 8192), ("ckks16384", 16384)])
def test_config_group_composes(choice, n):
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=[f"secure_agg={choice}"]))
    GlobalHydra.instance().clear()
    assert cfg.secure_agg.name == "ckks" and cfg.secure_agg.poly_modulus_degree == n
    assert validate(cfg) == []


def test_command_line_preflight_lists_every_secure_agg_problem():
    problems = preflight(["secure_agg=ckks", "strategy=krum", "compression=topk",
                          "secure_agg.poly_modulus_degree=4096"], config_dir=CONF)
    joined = "\n".join(problems)
    assert len(problems) == 3
    for key in ("bound of 109 bits", "strategy.reducer='krum'", "compression='topk'"):
        assert key in joined
