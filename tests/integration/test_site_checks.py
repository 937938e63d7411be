"""Issue #16: each site checks its own file in its own actor; one error before round 1.

Three hospitals, each with a different fault (an unseen label, a missing column,
no file at all); the driver gathers the sites' reports and raises one
``DataError`` naming every site, path and column, and no round runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from rayfed.config import DatasetConfig, ModelConfig
from rayfed.data.make_sites import make_sites
from rayfed.errors import DataError
from rayfed.fl.orchestrator import Orchestrator
from rayfed.plan import resolve
from tests.conftest import small_config


def site_config(tmp_path: Path, sites: Path, num_clients: int):
    ds = DatasetConfig(name="files", train_path=f"{sites}/site_{{participant_id}}/train.csv",
                       test_path=f"{sites}/test.csv", schema_path=f"{sites}/schema.yaml")
    return small_config(tmp_path, dataset=ds,
                        model=ModelConfig(name="mlp", hidden_sizes=[8]),
                        fl={"num_clients": num_clients, "clients_per_round": num_clients,
                            "min_clients": 1, "rounds": 2},
                        runtime={"placement": "dedicated", "actor_num_cpus": 0.25})


def test_every_bad_site_is_named_in_one_error_before_round_1(ray_session, tmp_path) -> None:
    sites = tmp_path / "sites"
    make_sites(str(sites), sites=4, seed=0)
    site0 = sites / "site_0" / "train.csv"
    frame = pd.read_csv(site0)
    frame.loc[3, "diagnosis"] = "unknown"
    frame.to_csv(site0, index=False)
    site1 = sites / "site_1" / "train.csv"
    pd.read_csv(site1).drop(columns=["mean_texture"]).to_csv(site1, index=False)
    shutil.rmtree(sites / "site_3")
    plan = resolve(site_config(tmp_path, sites, num_clients=4))

    with pytest.raises(DataError) as err:
        Orchestrator(plan)
    text = str(err.value)
    assert "nothing was trained" in text
    assert (f"site 0 ({site0}): column 'diagnosis' has label(s) ['unknown'] that are not in "
            "dataset.classes=['malignant', 'benign']") in text
    assert f"site 1 ({site1}) lacks column(s) ['mean_texture']" in text
    assert f"site 3 ({sites}/site_3/train.csv)" in text and "does not exist on node" in text
    assert "site 2" not in text  # the good site is not blamed


def test_an_undeclared_extra_column_at_one_site_is_named(ray_session, tmp_path) -> None:
    sites = tmp_path / "sites"
    make_sites(str(sites), sites=2, seed=1)
    site1 = sites / "site_1" / "train.csv"
    frame = pd.read_csv(site1)
    frame["ward"] = "a"
    frame.to_csv(site1, index=False)
    with pytest.raises(DataError, match=r"site 1 \(.*\) has column\(s\) \['ward'\] that the "
                                        r"dataset config does not name"):
        Orchestrator(resolve(site_config(tmp_path, sites, num_clients=2)))


def test_good_sites_train_and_without_a_test_file_report_federated_accuracy(
        ray_session, tmp_path) -> None:
    sites = tmp_path / "sites"
    make_sites(str(sites), sites=3, seed=0)
    cfg = site_config(tmp_path, sites, num_clients=3)
    cfg = cfg.__class__(**{**cfg.__dict__, "dataset": DatasetConfig(
        name="files", train_path=cfg.dataset.train_path, schema_path=cfg.dataset.schema_path)})
    with Orchestrator(resolve(cfg)) as orch:
        history = list(orch.rounds())
        summary = orch.summary()
    assert [r.status for r in history] == ["completed", "completed"]
    assert all(r.test_accuracy is None for r in history)
    assert summary["evaluation"] == "federated"
    assert summary["final_accuracy"] is None
    assert 0.5 < summary["final_federated_accuracy"] <= 1.0
