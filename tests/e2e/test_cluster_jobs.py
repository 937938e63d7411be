"""`ray job submit --working-dir .` against a local multi-node cluster, as a user runs it.

One cluster for the module (``python -m rayfed.cluster.local``'s ``up``: a head,
two ``edge`` nodes and one ``cloud`` node, token authentication on); three jobs
are submitted with the CLI at once and checked afterwards:

* ``jobs/federated.py`` with dedicated participants on ``{edge: 0.25}``:
  SUCCEEDED, summary.json and the MLflow run, and every participant actor on an
  edge node;
* ``jobs/offload.py`` with the small fleet: SUCCEEDED, the CloudWorker on the
  cloud node and the edge devices on edge nodes;
* ``jobs/federated.py`` with a bad config: FAILED, the validation error in
  ``ray job logs``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import mlflow
import pytest

from rayfed.cluster.local import ClusterState, down, list_state, state_api, up
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SUBMIT_TIMEOUT_S = 480


def client_env(state: ClusterState) -> dict[str, str]:
    drop = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE",
            "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(state.client_env())
    return env


def ray_job(state: ClusterState, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ray", "job", *args], cwd=REPO, env=client_env(state),
                          capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("cluster")
    state = up(state_dir, edge_nodes=2, cloud_nodes=1, cpus_per_node=1, head_cpus=1)
    yield state
    down(state_dir)


@pytest.fixture(scope="module")
def upload_probe():
    """A gitignored folder of 20 MB in the repo: Ray must leave it out of the upload."""
    probe = REPO / "checkpoints" / f"upload-probe-{uuid.uuid4().hex[:8]}"
    probe.mkdir(parents=True)
    (probe / "weights.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    yield probe
    shutil.rmtree(probe)


@pytest.fixture(scope="module")
def jobs(cluster, upload_probe, tmp_path_factory):
    """Submit the three jobs concurrently with the CLI; wait for each to end."""
    out = tmp_path_factory.mktemp("jobs")
    tag = uuid.uuid4().hex[:8]
    # One store per job: two processes creating one sqlite store race on its migrations.
    def tracking(name: str) -> str:
        return f"tracking.uri=sqlite:///{out}/{name}.db"

    specs = {
        "federated": ["python", "jobs/federated.py", "fl.rounds=2", "fl.num_clients=4",
                      "fl.clients_per_round=4", "fl.min_clients=2",
                      "runtime.placement=dedicated", "+runtime.resources={edge: 0.25}",
                      "runtime.actor_num_cpus=0.25", "checkpoint.enabled=false",
                      "tracking.log_model=false", tracking("federated"),
                      f"hydra.run.dir={out}/federated"],
        "offload": ["python", "jobs/offload.py", "offload=small", "offload.policy=greedy_eft",
                    "offload.num_tasks=20", "offload.calibration_runs=1",
                    "offload.fleet.resource_per_actor=0.5", tracking("offload"),
                    f"hydra.run.dir={out}/offload"],
        "invalid": ["python", "jobs/federated.py", "partition.alpha=-1",
                    f"hydra.run.dir={out}/invalid"],
    }
    procs = {
        name: subprocess.Popen(
            ["ray", "job", "submit", "--submission-id", f"rayfed-{name}-{tag}",
             "--working-dir", ".", "--", *cmd],
            cwd=REPO, env=client_env(cluster), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        for name, cmd in specs.items()
    }
    logs = {name: p.communicate(timeout=SUBMIT_TIMEOUT_S)[0] for name, p in procs.items()}
    infos = {name: state_api(cluster, f"/api/jobs/rayfed-{name}-{tag}") for name in specs}
    return {"out": out, "tag": tag, "logs": logs, "infos": infos,
            "returncodes": {n: p.returncode for n, p in procs.items()}}


def nodes_with(cluster: ClusterState, resource: str) -> set[str]:
    return {n["node_id"] for n in list_state(cluster, "nodes")
            if n["resources_total"].get(resource, 0) > 0}


def actor_nodes(cluster: ClusterState, job_id: str, class_name: str) -> list[str]:
    return [a["node_id"] for a in list_state(cluster, "actors")
            if a["job_id"] == job_id and a["class_name"] == class_name]


def test_federated_job_succeeds_with_summary_and_mlflow_run(jobs):
    info = jobs["infos"]["federated"]
    assert info["status"] == "SUCCEEDED", jobs["logs"]["federated"][-3000:]
    assert jobs["returncodes"]["federated"] == 0
    summary = json.loads((jobs["out"] / "federated" / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["rounds_completed"] == 2
    assert summary["placement"] == "dedicated" and summary["num_actors"] == 4
    assert summary["final_accuracy"] > 0.3  # 10 classes: well above chance after 2 rounds
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{jobs['out']}/federated.db")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["runtime.placement"] == "dedicated"
    assert run.data.metrics["accuracy"] == pytest.approx(summary["final_accuracy"])
    assert "summary.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_dedicated_participants_land_on_edge_nodes(cluster, jobs):
    edge, cloud = nodes_with(cluster, "edge"), nodes_with(cluster, "cloud")
    assert len(edge) == 2 and len(cloud) == 1
    placed = actor_nodes(cluster, jobs["infos"]["federated"]["job_id"], "HostActor")
    assert len(placed) == 4
    assert set(placed) <= edge
    # Nothing else the job started (e.g. the driver's node) hosts a participant.
    head = {n["node_id"] for n in list_state(cluster, "nodes") if n["is_head_node"]}
    assert not set(placed) & (head | cloud)


def test_offload_job_puts_cloud_workers_on_the_cloud_node(cluster, jobs):
    info = jobs["infos"]["offload"]
    assert info["status"] == "SUCCEEDED", jobs["logs"]["offload"][-3000:]
    summary = json.loads((jobs["out"] / "offload" / "summary.json").read_text())
    assert summary["policies"]["greedy_eft"]["p95_latency_ms"] > 0
    job_id = info["job_id"]
    cloud_placed = actor_nodes(cluster, job_id, "CloudWorker")
    edge_placed = actor_nodes(cluster, job_id, "EdgeDevice")
    assert len(cloud_placed) == 1 and set(cloud_placed) == nodes_with(cluster, "cloud")
    assert len(edge_placed) == 2 and set(edge_placed) <= nodes_with(cluster, "edge")


def test_bad_config_ends_failed_with_the_validation_error_in_the_logs(cluster, jobs):
    info = jobs["infos"]["invalid"]
    assert info["status"] == "FAILED"
    assert jobs["returncodes"]["invalid"] != 0
    logs = ray_job(cluster, "logs", f"rayfed-invalid-{jobs['tag']}")
    assert logs.returncode == 0, logs.stderr
    assert "partition.alpha=-1" in logs.stdout and "nothing was started" in logs.stdout
    assert not (jobs["out"] / "invalid" / "summary.json").exists()


def test_working_dir_upload_leaves_out_gitignored_folders(cluster, jobs, upload_probe):
    unpacked = sorted(Path(cluster.temp_dir).glob(
        "session_*/runtime_resources/working_dir_files/_ray_pkg_*/"))
    assert unpacked, "no working_dir was unpacked on the head"
    pkg = unpacked[0]
    assert (pkg / "jobs" / "federated.py").exists() and (pkg / "rayfed").is_dir()
    assert not (pkg / "checkpoints" / upload_probe.name).exists()
    assert not (pkg / ".git").exists()
    size = sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file())
    assert size < 10 * 1024 * 1024  # the 20 MB probe stayed behind
