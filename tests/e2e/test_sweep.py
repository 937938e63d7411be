"""Hydra multirun from the command line: a 3×2 privacy sweep becomes one MLflow
parent run with six child runs, a summary table and a privacy–utility plot."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from rayfed.tracking.sweep import PARENT_FILE, by_setting, trial_rows
from tests.conftest import REPO
from tests.e2e.test_federated_job import job_env

pytestmark = pytest.mark.slow

# Tiny trials: 4 participants, 2 rounds, one pooled actor, no checkpoints or model.
TINY = ["fl.rounds=2", "fl.num_clients=4", "fl.clients_per_round=2", "fl.min_clients=1",
        "runtime.num_cpus=2", "runtime.pool_size=1", "checkpoint.enabled=false",
        "tracking.log_model=false", "model.hidden_sizes=[16]"]


def test_privacy_sweep_is_one_parent_run_with_six_children(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_dir = tmp_path / "multirun"
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "federated.py"), "-m", "privacy=central_dp",
         "privacy.target_epsilon=1,3,8", "seed=0,1", *TINY, f"tracking.uri={uri}",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    parent_id = json.loads((sweep_dir / PARENT_FILE).read_text())["parent_run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["rayfed.sweep_keys"]) == ["privacy.target_epsilon", "seed"]
    runs = client.search_runs([parent.info.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(runs) == 7 and len(children) == 6
    settings = {(r.data.params["privacy.target_epsilon"], r.data.params["seed"])
                for r in children}
    assert settings == {(e, s) for e in ("1.0", "3.0", "8.0") for s in ("0", "1")}
    for r in children:
        assert r.info.status == "FINISHED"
        assert 0 < r.data.metrics["epsilon"] <= float(r.data.params["privacy.target_epsilon"])
        assert r.info.run_name.startswith("privacy.target_epsilon=")

    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert artifacts == {"sweep_accuracy.png", "sweep_accuracy.json", "sweep_summary.md",
                         "sweep_trials.csv"}
    assert (sweep_dir / "sweep_accuracy.png").stat().st_size > 10_000
    summary = (sweep_dir / "sweep_summary.md").read_text()
    assert "6 trials" in summary and summary.count("| FINISHED |") == 6
    assert parent.data.metrics["trials"] == 6
    best = max(r.data.metrics["accuracy"] for r in children)
    assert parent.data.metrics["best_accuracy"] == pytest.approx(best)

    # The command re-creates the same summary from the multirun dir.
    again = subprocess.run([sys.executable, "-m", "rayfed.tracking.sweep", str(sweep_dir),
                            "--out", str(tmp_path / "again")], cwd=REPO, env=job_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "again" / "sweep_summary.md").read_text() == summary


def test_summary_tables_average_over_seeds():
    children = [
        {"params": {"privacy.target_epsilon": e, "seed": s},
         "metrics": {"accuracy": acc, "epsilon": float(e) * 0.9}, "status": "FINISHED",
         "run_id": f"r{e}{s}"}
        for (e, s, acc) in [("8.0", "0", 0.9), ("1.0", "1", 0.5), ("10.0", "0", 0.95),
                            ("1.0", "0", 0.7), ("8.0", "1", 0.8)]]
    keys = ["privacy.target_epsilon", "seed"]
    rows = trial_rows(children, keys)
    assert [(r["privacy.target_epsilon"], r["seed"]) for r in rows] == [
        (1.0, 0.0), (1.0, 1.0), (8.0, 0.0), (8.0, 1.0), (10.0, 0.0)]  # 10 after 8, not "1"
    settings = by_setting(rows, keys)
    assert [s["privacy.target_epsilon"] for s in settings] == [1.0, 8.0, 10.0]
    assert [s["trials"] for s in settings] == [2, 2, 1]
    assert settings[0]["accuracy_mean"] == pytest.approx(0.6)
    assert settings[0]["accuracy_std"] == pytest.approx(0.1414, abs=1e-3)
    assert settings[2]["accuracy_std"] == 0.0
    assert settings[1]["epsilon_mean"] == pytest.approx(7.2)


def test_ray_launcher_runs_trials_as_ray_tasks_under_one_parent(tmp_path):
    """`hydra/launcher=ray` (the `ray-launcher` extra; skipped where it isn't installed)."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_dir = tmp_path / "multirun"
    # A trial task takes half a CPU and its one actor the other half, so two trials
    # fit on a 2-CPU Ray at once without starving each other's actors.
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "federated.py"), "-m", "hydra/launcher=ray",
         "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.remote.num_cpus=0.5",
         "fl.lr=0.05,0.1", *TINY, "runtime.actor_num_cpus=0.5", f"tracking.uri={uri}",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "Ray Launcher is launching 2 jobs" in output
    assert "(_run_job pid=" in output  # the trials printed from Ray worker processes
    parent_id = json.loads((sweep_dir / PARENT_FILE).read_text())["parent_run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    assert parent.data.tags["rayfed.launcher"] == "RayLauncher"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert sorted(r.data.params["fl.lr"] for r in children) == ["0.05", "0.1"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert parent.data.metrics["trials"] == 2
