"""End-to-end: real configs through Hydra, the real command line, MLflow on sqlite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rayfed.config import register_configs, to_config
from rayfed.launch import run_federated
from tests.conftest import CONF, REPO

pytestmark = pytest.mark.slow


def composed(tmp_path: Path, overrides: list[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_config(compose("config", overrides=overrides))
    cfg.output_dir = str(tmp_path / "out")
    cfg.checkpoint.dir = str(tmp_path / "ckpt")
    cfg.tracking.uri = f"sqlite:///{tmp_path}/mlflow.db"
    return cfg


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_default_experiment_from_the_command_line(tmp_path):
    """README command 1's experiment: digits, 20 participants, Dirichlet 0.5, FedAvg."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "federated.py")], cwd=tmp_path,
                          env=job_env(), capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary_path,) = tmp_path.glob("outputs/digits-mlp-fedavg/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "FINISHED"
    assert summary["rounds_completed"] == 50
    assert summary["final_accuracy"] >= 0.90
    assert summary["wall_seconds"] <= 180 and wall <= 240
    assert summary["bytes_uploaded"] > 0 and summary["mean_round_seconds"] > 0
    assert "final test accuracy" in proc.stdout

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["fl.num_clients"] == "20"
    assert run.data.tags["git_commit"]
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert len(history) == 50 and history[-1].value == pytest.approx(summary["final_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "summary.json", "config.yaml"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/accuracy.png", "plots/loss.png"}


def test_invalid_config_names_every_bad_key_before_ray_starts(tmp_path):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "federated.py"), "partition.alpha=-1",
         "strategy=nope", "fl.clients_per_round=0"],
        cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    for key in ("partition.alpha", "strategy=", "fl.clients_per_round"):
        assert key in proc.stderr
    assert "nothing was started" in proc.stderr
    assert "Ray" not in proc.stderr + proc.stdout  # no cluster was started
    assert not (tmp_path / "mlflow.db").exists()
    assert time.perf_counter() - t0 < 60


def test_hospitals_experiment(tmp_path, ray_session):
    cfg = composed(tmp_path, ["experiment=hospitals"])
    assert cfg.dataset.name == "breast_cancer" and cfg.fl.num_clients == 5
    summary = run_federated(cfg, show_progress=False)
    assert summary["final_accuracy"] >= 0.93
    assert summary["placement"] == "dedicated" and summary["num_actors"] == 5

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking.uri)
    run_id = summary["mlflow_run_id"]
    mlflow.set_tracking_uri(cfg.tracking.uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    import torch

    from rayfed.data.federated import load_test_split

    test = load_test_split(cfg.dataset)
    with torch.no_grad():
        acc = (model(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean()
    assert acc == pytest.approx(summary["final_accuracy"])
    assert client.get_run(run_id).info.status == "FINISHED"


def test_failed_run_is_marked_failed(tmp_path, ray_session):
    # 400 participants with >= 10 samples each cannot be cut from 1,437 digits:
    # the participants' actors fail while building their shards.
    cfg = composed(tmp_path, ["fl.num_clients=400", "partition.min_samples=10"])
    with pytest.raises(Exception, match=r"partition\.min_samples"):
        run_federated(cfg, show_progress=False)
    summary = json.loads((Path(cfg.output_dir) / "summary.json").read_text())
    assert summary["status"] == "FAILED" and "partition.min_samples" in summary["error"]
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rayfed").experiment_id])
    assert run.info.status == "FAILED"
