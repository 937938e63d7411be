"""Issue #16: on a 3-node Ray cluster each site's file is opened only by its own actor,
on the node that advertises its ``site_<id>`` resource.

``ray.cluster_utils.Cluster`` starts a head (no CPUs, so no actor lands there) and
three worker nodes, node *i* advertising ``site_i``. A ``sitecustomize`` module on
``PYTHONPATH`` installs an audit hook (``sys.addaudithook``, event ``open``) in
*every* Python process of the run, the driver and each Ray worker alike, which
records the process id of each opening of a file under a site's folder. The
driver runs in a subprocess of its own, like F7 of tests/integration/test_faults.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rayfed.data.make_sites import make_sites
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SITECUSTOMIZE = '''
import os, sys

_ROOT = os.environ.get("RAYFED_SITES_ROOT")
_LOG = os.environ.get("RAYFED_OPEN_LOG")


def _audit(event, args):
    if event != "open" or not _ROOT or not args or not isinstance(args[0], str):
        return
    path = args[0]
    if path.startswith(_ROOT + "/site_"):
        with open(_LOG, "a") as f:  # _LOG is outside the sites root: no recursion
            f.write(f"{os.getpid()} {path}\\n")


sys.addaudithook(_audit)
'''

DRIVER = '''
import json
import os
import sys
from pathlib import Path

import psutil
import ray
from ray.cluster_utils import Cluster

from rayfed.config import DatasetConfig, ModelConfig
from rayfed.fl.orchestrator import Orchestrator
from rayfed.plan import resolve
from tests.conftest import small_config

tmp, sites = Path(sys.argv[1]), Path(sys.argv[2])
store = 80 * 2**20
cluster = Cluster(initialize_head=True,
                  head_node_args={"num_cpus": 0, "object_store_memory": store,
                                  "include_dashboard": False})
workers = [cluster.add_node(num_cpus=1, object_store_memory=store, resources={f"site_{i}": 1})
           for i in range(3)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
ds = DatasetConfig(name="files", train_path=f"{sites}/site_{{participant_id}}/train.csv",
                   test_path=f"{sites}/test.csv", schema_path=f"{sites}/schema.yaml")
cfg = small_config(tmp, dataset=ds, model=ModelConfig(name="mlp", hidden_sizes=[16]),
                   fl={"num_clients": 3, "clients_per_round": 3, "min_clients": 3,
                       "rounds": 3, "round_timeout_s": 60},
                   runtime={"placement": "dedicated", "actor_num_cpus": 0.5,
                            "participant_resources": {"site_{participant_id}": 1}})
with Orchestrator(resolve(cfg)) as orch:
    pids = ray.get([a.ready.remote() for a in orch.placement.actors])
    raylet = {w.all_processes["raylet"][0].process.pid: i for i, w in enumerate(workers)}
    site_of_node = [psutil.Process(p).ppid() for p in pids]
    history = list(orch.rounds())
    out = {"driver_pid": os.getpid(), "actor_pids": pids,
           "actor_node_site": [raylet.get(pp) for pp in site_of_node],
           "statuses": [r.status for r in history],
           "accuracy": history[-1].test_accuracy}
print("RESULT " + json.dumps(out), flush=True)
ray.shutdown()
cluster.shutdown()
'''


def test_each_site_file_is_opened_only_by_its_actor_on_its_node(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    sites = tmp_path / "sites"
    make_sites(str(sites), sites=3, seed=0)
    log = tmp_path / "opens.log"
    ray_tmp = tempfile.mkdtemp(prefix="rf-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=f"{hook}{os.pathsep}{REPO}", RAY_TMPDIR=ray_tmp,
               RAYFED_SITES_ROOT=str(sites), RAYFED_OPEN_LOG=str(log))
    try:
        proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), str(sites)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=480,
                              start_new_session=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    assert out["statuses"] == ["completed"] * 3
    # Participant i's actor runs on the node advertising site_i.
    assert out["actor_node_site"] == [0, 1, 2]
    opens: dict[str, set[int]] = {}
    for entry in log.read_text().splitlines():
        pid, path = entry.split(" ", 1)
        opens.setdefault(path, set()).add(int(pid))
    # Each site's file was opened, and only by the process of that site's actor:
    # not by the driver, not by another site's actor, not by any other process.
    assert sorted(opens) == [f"{sites}/site_{i}/train.csv" for i in range(3)]
    for i, pid in enumerate(out["actor_pids"]):
        assert opens[f"{sites}/site_{i}/train.csv"] == {pid}
    assert out["driver_pid"] not in set().union(*opens.values())
