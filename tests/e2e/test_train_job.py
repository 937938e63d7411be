"""End-to-end: the DDP job from the real command line, with MLflow on sqlite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_train_ddp_from_the_command_line(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "train_ddp.py"), "train.epochs=4",
         "num_cpus=2", "train.precision=bf16", f"tracking.uri={uri}"],
        cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("outputs/train/*/summary.json")
    summary = json.loads(path.read_text())
    assert summary["status"] == "FINISHED" and summary["precision"] == "bf16"
    assert summary["num_workers"] == 2 and summary["final_accuracy"] >= 0.85
    assert summary["samples_per_second"] > 0
    # Progress per epoch on the console; each rank's report in the job log only.
    assert "DDP epochs" in proc.stdout and "4/4" in proc.stdout
    assert "Reporting training result" not in proc.stdout + proc.stderr
    log = (path.parent / "train_ddp.log").read_text()
    assert [log.count(f"epoch {e} rank {r}:") for e in range(4) for r in (0, 1)] == [1] * 8
    assert (tmp_path / "ray_train_runs" / summary["ray_train_run"]).is_dir()
    run = MlflowClient(tracking_uri=uri).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["train.precision"] == "bf16"
    assert run.data.metrics["accuracy"] == pytest.approx(summary["final_accuracy"])


def test_fp16_on_cpu_is_refused_before_anything_starts(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "train_ddp.py"), "train.precision=fp16",
         "train.epochs=0"],
        cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "train.precision=fp16 needs CUDA" in proc.stderr
    assert "train.epochs=0 must be >= 1" in proc.stderr
    assert not (tmp_path / "ray_train_runs").exists()
