"""cluster.yaml against Ray's own autoscaler schema, and the local cluster's plan."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from rayfed.cluster.local import plan, start_command
from tests.conftest import REPO


@pytest.fixture(scope="module")
def cluster_yaml() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_schema(cluster_yaml):
    # prepare_config merges the AWS defaults as `ray up` does; validate_config
    # checks ray-schema.json plus head_node_type and the min/max worker sums.
    prepared = prepare_config(copy.deepcopy(cluster_yaml))
    assert validate_config(prepared) is None  # raises on any schema violation
    resources = {name: node["resources"]
                 for name, node in prepared["available_node_types"].items()}
    assert any(r.get("edge") == 1 for r in resources.values())
    assert any(r.get("cloud") == 1 for r in resources.values())


def test_the_schema_check_can_fail(cluster_yaml):
    bad = copy.deepcopy(cluster_yaml)
    bad["available_node_types"]["edge_cpu"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(cluster_yaml)
    bad["available_node_types"]["edge_cpu"]["min_workers"] = bad["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(bad))


def test_node_types_advertise_edge_and_cloud(cluster_yaml):
    types = cluster_yaml["available_node_types"]
    assert types[cluster_yaml["head_node_type"]]["resources"] == {}
    assert types["edge_cpu"]["resources"] == {"edge": 1}
    assert types["cloud_gpu"]["resources"] == {"cloud": 1}
    assert types["cloud_gpu"]["node_config"]["InstanceType"].startswith("g")
    for name in ("edge_cpu", "cloud_gpu"):
        assert 0 <= types[name]["min_workers"] <= types[name]["max_workers"]
    assert 0 < cluster_yaml["idle_timeout_minutes"] <= 60


def test_one_node_type_per_site_advertises_its_site_resource(cluster_yaml):
    # runtime.participant_resources={'site_{participant_id}': 1} places participant i here.
    types = cluster_yaml["available_node_types"]
    sites = sorted(n for n in types if n.startswith("site_"))
    assert sites == [f"site_{i}" for i in range(5)]
    for name in sites:
        assert types[name]["resources"] == {name: 1}
        assert types[name]["max_workers"] == 1  # one machine per site


def test_local_cluster_can_start_one_node_per_site():
    nodes = plan(edge_nodes=0, cloud_nodes=0, cpus_per_node=1, head_cpus=1, site_nodes=3)
    assert [(n.name, n.resources) for n in nodes] == [
        ("head", {}), ("site-0", {"site_0": 1.0}), ("site-1", {"site_1": 1.0}),
        ("site-2", {"site_2": 1.0})]


def test_setup_installs_pinned_torch_then_the_project(cluster_yaml):
    import ray
    import torch

    setup = cluster_yaml["setup_commands"]
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    assert any(f"ray[default,train]=={ray.__version__}" in c for c in setup)
    torch_line = next(i for i, c in enumerate(setup) if torch_pin in c)
    project_line = next(i for i, c in enumerate(setup) if "pip install" in c and "~/rayfed" in c)
    assert torch_line < project_line
    assert cluster_yaml["file_mounts"]["~/rayfed"] == "."
    for heavy in ("mlruns", "outputs", "checkpoints"):
        assert f"**/{heavy}" in cluster_yaml["rsync_exclude"]


def test_local_plan_and_start_commands():
    nodes = plan(edge_nodes=2, cloud_nodes=1, cpus_per_node=1, head_cpus=2)
    assert [n.name for n in nodes] == ["head", "edge-0", "edge-1", "cloud-0"]
    assert [n.resources for n in nodes] == [{}, {"edge": 1.0}, {"edge": 1.0}, {"cloud": 1.0}]
    head = start_command(nodes[0], temp_dir="/tmp/x", gcs_address=None,
                         ports={"gcs": 1, "dashboard": 2, "client": 3, "agent": 4})
    assert "--head" in head and "--port=1" in head and "--dashboard-port=2" in head
    assert "--dashboard-host=127.0.0.1" in head
    worker = start_command(nodes[1], temp_dir="/tmp/x/edge-0", gcs_address="h:1",
                           ports={"agent": 5})
    assert "--head" not in worker and "--address=h:1" in worker
    assert '--resources={"edge": 1.0}' in worker and "--temp-dir=/tmp/x/edge-0" in worker


def test_gcp_variant_in_the_docs_passes_rays_schema(cluster_yaml):
    doc = (REPO / "docs" / "cluster.md").read_text()
    block = doc.split("### GCP", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    gcp = {**copy.deepcopy(cluster_yaml), **yaml.safe_load(block)}
    assert gcp["provider"]["type"] == "gcp"
    assert gcp["available_node_types"]["cloud_gpu"]["resources"] == {"cloud": 1}
    validate_config(prepare_config(gcp))
