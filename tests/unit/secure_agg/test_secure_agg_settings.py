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


@pytest.mark.parametrize("std", [float("nan"), float("inf"), -1e-6])
def test_decrypt_noise_std_must_be_finite_and_non_negative(std):
    (msg,) = [m for m in validate(ckks(decrypt_noise_std=std)) if "decrypt_noise_std" in m]
    assert "must be a finite number >= 0" in msg
    assert not any("decrypt_noise_std" in m for m in validate(ckks(decrypt_noise_std=0.0)))


def test_secure_rng_defaults_on_under_secure_agg_and_off_needs_acknowledgement():
    def user_level_plan(c):
        return resolve(c).privacy.user

    def resolved_secure_rng(c):
        return _resolved(c)

    dp = PrivacyConfig(name="central_dp", noise_placement="clients", noise_multiplier=1.0,
                       delta=1e-5)
    cfg = replace(ckks(), privacy=dp)
    assert validate(cfg) == [] and user_level_plan(cfg).secure_rng is True
    # Without secure aggregation, or with server-side noise, the default stays off.
    assert not resolved_secure_rng(replace(cfg, secure_agg=SecureAggConfig()))
    assert resolved_secure_rng(replace(cfg, privacy=replace(dp, name="local_dp",
                                                             noise_placement="server")))
    off = replace(cfg, privacy=replace(dp, secure_rng=False))
    (msg,) = [m for m in validate(off) if "secure_rng" in m]
    assert "privacy.allow_server_known_noise=true" in msg
    acknowledged = replace(cfg, privacy=replace(dp, secure_rng=False,
                                                allow_server_known_noise=True))
    assert validate(acknowledged) == [] and user_level_plan(acknowledged).secure_rng is False


def test_central_dp_yaml_composes_with_ckks_and_secure_noise():
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=[
            "secure_agg=ckks", "privacy=central_dp", "privacy.noise_placement=clients"]))
    GlobalHydra.instance().clear()
    assert cfg.privacy.secure_rng is None and _resolved(cfg)
    assert not [m for m in validate(cfg) if "secure_rng" in m]


def _resolved(c):
    from rayfed.privacy.plan import resolved_secure_rng

    return resolved_secure_rng(c.privacy, secure_agg=c.secure_agg.name != "none")
