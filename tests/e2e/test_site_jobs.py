"""``ray job submit`` of a user's model to a cluster with one node per site (issue #16).

``python -m rayfed.cluster.local up --sites 3``'s cluster (a head and nodes
``site-0..2`` advertising ``site_<i>``); rayfed's code goes with
``--working-dir .`` and the user's module, from a folder outside the repository,
with ``py_modules``. Every participant actor runs on its site's node.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayfed.cluster.local import down, list_state, up
from rayfed.data.make_sites import make_sites
from tests.conftest import REPO
from tests.e2e.test_cluster_jobs import SUBMIT_TIMEOUT_S, client_env

pytestmark = pytest.mark.slow

MY_MODEL = '''
from torch import nn


def Net(num_classes, input_shape, width=16):
    return nn.Sequential(nn.Linear(input_shape[0], width), nn.ReLU(),
                         nn.Linear(width, num_classes))
'''


def test_job_with_py_modules_runs_each_site_on_its_node(tmp_path: Path) -> None:
    import subprocess

    user = tmp_path / "user"
    user.mkdir()
    # A package folder: `ray job submit` uploads py_modules entries as directories.
    (user / "my_site_nets").mkdir()
    (user / "my_site_nets" / "__init__.py").write_text(MY_MODEL)
    make_sites(str(tmp_path / "data"), sites=3, seed=0)
    state = up(tmp_path / "cluster", edge_nodes=0, cloud_nodes=0, site_nodes=3, head_cpus=1)
    try:
        out = tmp_path / "run"
        runtime_env = json.dumps({"py_modules": [str(user / "my_site_nets")]})
        proc = subprocess.run(
            ["ray", "job", "submit", "--working-dir", ".", "--runtime-env-json", runtime_env,
             "--", "python", "jobs/federated.py", "experiment=hospitals", "fl.num_clients=3",
             "fl.clients_per_round=3", "fl.min_clients=2", "fl.rounds=3", "dataset=files",
             f"dataset.train_path='{tmp_path}/data/site_{{participant_id}}/train.csv'",
             f"dataset.schema_path={tmp_path}/data/schema.yaml",
             f"dataset.test_path={tmp_path}/data/test.csv",
             "runtime.participant_resources={'site_{participant_id}': 1}",
             "runtime.actor_num_cpus=0.5", "model=custom", "model._target_=my_site_nets.Net",
             "tracking.enabled=false", "checkpoint.enabled=false", f"hydra.run.dir={out}"],
            cwd=REPO, env=client_env(state), capture_output=True, text=True,
            timeout=SUBMIT_TIMEOUT_S)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "FINISHED" and summary["final_accuracy"] > 0.8
        site_nodes = {n["node_id"]: next(k for k in n["resources_total"] if k.startswith("site_"))
                      for n in list_state(state, "nodes")
                      if any(k.startswith("site_") for k in n["resources_total"])}
        hosts = [a for a in list_state(state, "actors") if a["class_name"] == "HostActor"]
        assert len(hosts) == 3
        assert sorted(site_nodes[a["node_id"]] for a in hosts) == ["site_0", "site_1", "site_2"]
    finally:
        down(tmp_path / "cluster")
