"""The offloading job composed through Hydra: summary.json, MLflow metrics, CDF PNG."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rayfed.offload.config import register_offload_configs, to_offload_config
from rayfed.offload.job import run_offload
from tests.conftest import CONF

pytestmark = pytest.mark.usefixtures("ray_session")

LARGE_TASKS = ("mlp_wide_infer", "cnn_infer", "cnn1d_infer", "cnn_train", "fl_infer")


def compose_job(*overrides: str):
    register_offload_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_offload_config(compose(config_name="offload_job", overrides=list(overrides)))


def test_default_fleet_profile_is_8_edge_devices_in_3_classes_and_2_cloud_workers():
    fleet = compose_job().offload.fleet.devices
    edge = {n: d.count for n, d in fleet.items() if d.kind == "edge"}
    cloud = sum(d.count for d in fleet.values() if d.kind == "cloud")
    assert (len(edge), sum(edge.values()), cloud) == (3, 8, 2)


def test_job_writes_summary_mlflow_metrics_and_latency_cdf(tmp_path):
    import mlflow

    job = compose_job("offload=small", "offload.policy=greedy_eft", "offload.num_tasks=20",
                      "offload.arrival_rate=40", "offload.calibration_runs=1",
                      f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                      # Linear models only: seconds to build, and int8 variants in play.
                      *(f"~offload.workload.tasks.{k}" for k in LARGE_TASKS))
    job.output_dir = str(tmp_path)
    summary = run_offload(job, show_progress=False)

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    g = on_disk["policies"]["greedy_eft"]
    assert on_disk["status"] == "FINISHED" and g["num_tasks"] == 20
    assert sorted(on_disk["kinds"]) == ["logreg_infer", "mlp_infer", "mlp_train"]
    assert 0 < g["p50_latency_ms"] <= g["p95_latency_ms"] <= g["p99_latency_ms"]
    assert 0 <= g["deadline_miss_rate"] <= 1
    # After the stream every device's outstanding load is back to 0.
    assert set(g["outstanding_after_stream"]) == {"edge_fast-0", "edge_slow-0", "cloud-0"}
    assert all(v == [0, 0] for v in g["outstanding_after_stream"].values())
    assert g["reassignments"] == 0 and g["dead_devices"] == []
    assert 0 < on_disk["lower_bound_makespan_s"] <= g["makespan_s"] * 1.0001
    assert "| greedy_eft |" in (tmp_path / "policy_table.md").read_text()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["greedy_eft.p95_latency_ms"] == pytest.approx(g["p95_latency_ms"])
    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert plots == ["plots/latency_cdf_greedy_eft.png"]


def test_model_trained_by_the_federated_job_is_loaded_from_its_mlflow_run(tmp_path,
                                                                           monkeypatch):
    """The federated job logs its final model as MLflow artifact ``model``; a zoo entry
    with ``source: runs:/<id>/model`` runs tasks on exactly those weights."""
    import torch

    from rayfed.models.registry import ModelSpec, build_model
    from rayfed.offload.config import ZooModelConfig
    from rayfed.offload.zoo import build_zoo_model, instantiate, load_data
    from rayfed.tracking.mlflow import MlflowTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    trained = build_model(ModelSpec("mlp", (1, 8, 8), 10, (128,)), seed=7)
    tracker = MlflowTracker(uri=uri, experiment="fl", run_name="fl")
    run_id = tracker.start(params={}, tags={})
    tracker.log_model(trained, input_example=torch.zeros(2, 1, 8, 8).numpy())
    tracker.finish("FINISHED")

    zm = build_zoo_model("fl", ZooModelConfig(name="mlp", hidden_sizes=[128],
                                              source=f"runs:/{run_id}/model"),
                         load_data("digits"), seed=0)
    loaded = instantiate(zm)
    for a, b in zip(loaded["fp32"].state_dict().values(), trained.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b)
    assert set(zm.accuracy) == {"fp32", "int8"}


def test_an_interrupted_run_keeps_every_policy_that_finished(tmp_path):
    """Ctrl-C right after the first of two policies: its results are on disk and in
    MLflow, complete, and the run is KILLED rather than FAILED."""
    import mlflow

    job = compose_job("offload=small", 'offload.policy="greedy_eft,all_cloud"',
                      "offload.num_tasks=12", "offload.arrival_rate=40",
                      "offload.calibration_runs=1", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                      *(f"~offload.workload.tasks.{k}" for k in LARGE_TASKS))
    job.output_dir = str(tmp_path)
    finished: list[str] = []

    def interrupt_after_first(name: str, summary: dict) -> None:
        finished.append(name)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_offload(job, show_progress=False, on_policy=interrupt_after_first)
    assert finished == ["greedy_eft"]

    kept = json.loads((tmp_path / "policies" / "greedy_eft.json").read_text())
    assert kept["policy"] == "greedy_eft" and kept["num_tasks"] == 12
    assert 0 < kept["p50_latency_ms"] <= kept["p95_latency_ms"] <= kept["p99_latency_ms"]
    assert not (tmp_path / "policies" / "all_cloud.json").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "KILLED" and summary["policies_finished"] == ["greedy_eft"]
    assert summary["policies"]["greedy_eft"] == {k: v for k, v in kept.items() if k != "policy"}

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("rayfed-offload").experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.metrics["greedy_eft.p95_latency_ms"] == pytest.approx(kept["p95_latency_ms"])
    assert not any(k.startswith("all_cloud.") for k in run.data.metrics)
    assert "policies" in {a.path for a in client.list_artifacts(run.info.run_id)}
