"""Issue #17: a command line's typos and settings of features left off are errors
that name the key to use, instead of a silent run with the defaults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from rayfed.config import Config
from rayfed.launch import preflight
from rayfed.overrides import closest, edit_distance, schema_of

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(autouse=True)
def _fresh_hydra() -> Iterator[None]:
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def test_edit_distance_and_closest_key() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("fl.round", "fl.rounds") == 1
    schema = schema_of(Config())
    assert closest("fl.round", schema.keys) == "fl.rounds"
    assert closest("privacy.target_epsilom", schema.keys) == "privacy.target_epsilon"


def test_schema_walks_every_section_and_knows_free_form_dicts() -> None:
    schema = schema_of(Config())
    for key in ("fl.rounds", "privacy.target_epsilon", "secure_agg.poly_modulus_degree",
                "compression.topk_ratio", "runtime.resources", "name"):
        assert key in schema.keys
    assert schema.knows("runtime.resources.edge")
    assert schema.knows("adversary.malformed.3")
    assert not schema.knows("fl.round")


@pytest.mark.parametrize("override", ["fl.round=5", "+fl.round=5"])
def test_unknown_key_names_the_closest_valid_key(override: str) -> None:
    problems = preflight([override], config_dir=CONF)
    assert problems == [f"{override}: `fl.round` is not a configuration key; did you mean "
                        "`fl.rounds`? (docs/configuration.md lists every key)"]


def test_unknown_sweep_key_is_caught_before_the_sweep() -> None:
    problems = preflight(["fl.lrr=0.1,0.2"], config_dir=CONF, sweep=True)
    assert len(problems) == 1 and "did you mean `fl.lr`" in problems[0]


def test_privacy_key_with_privacy_off_is_an_error() -> None:
    problems = preflight(["privacy.target_epsilon=3"], config_dir=CONF)
    assert problems == ["privacy.target_epsilon=3 requires privacy=central_dp or "
                        "privacy=local_dp: privacy is none, so `privacy.target_epsilon` "
                        "would be ignored"]


@pytest.mark.parametrize(("override", "fix"), [
    ("compression.topk_ratio=0.1", "compression=int8 or compression=topk"),
    ("secure_agg.poly_modulus_degree=16384", "secure_agg=ckks or secure_agg=ckks16384"),
    ("adversary.fraction=0.2", "adversary=alie, adversary=gaussian, adversary=label_flip, "
                               "adversary=scaling or adversary=sign_flip"),
])
def test_each_feature_group_names_its_choices(override: str, fix: str) -> None:
    (problem,) = preflight([override], config_dir=CONF)
    assert problem.startswith(f"{override} requires {fix}:")


def test_feature_keys_pass_when_the_feature_is_on_or_independent_of_it() -> None:
    assert preflight(["privacy=central_dp", "privacy.target_epsilon=3"], config_dir=CONF) == []
    assert preflight(["compression.final_model=int8"], config_dir=CONF) == []
    assert preflight(["+adversary.malformed={3: nan}"], config_dir=CONF) == []
    assert preflight(["privacy=local_dp,central_dp", "privacy.target_epsilon=3"],
                     config_dir=CONF, sweep=True) == []


def test_an_experiment_files_keys_are_not_the_users() -> None:
    assert preflight(["experiment=hospitals"], config_dir=CONF) == []
