"""Issue #17, from the command line: a short private run is named after its choices
(directory and MLflow run), prints ε and δ in its result table with nothing after
it, writes its rounds to federated.log, and prints no library noise."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from tests.conftest import REPO
from tests.e2e.test_federated_job import job_env

pytestmark = pytest.mark.slow

SHORT = ["fl.rounds=3", "fl.num_clients=4", "fl.clients_per_round=4", "fl.min_clients=2",
         "runtime.num_cpus=2", "checkpoint.enabled=false"]


def test_private_run_output_name_log_and_table(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "federated.py"),
                           "privacy=central_dp", *SHORT, f"tracking.uri={uri}"],
                          cwd=tmp_path, env={**job_env(), "COLUMNS": "80"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.glob("outputs/digits-mlp-fedavg-central_dp/*")
    summary = json.loads((run_dir / "summary.json").read_text())
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "digits-mlp-fedavg-central_dp"
    assert run.data.params["privacy"] == "central_dp"  # the group choice, for sweeps

    out = proc.stdout.splitlines()
    title = next(i for i, line in enumerate(out) if "rayfed result" in line)
    table = out[title:]
    assert f"ε = {summary['epsilon']:.2f}, δ = 1e-05" in "\n".join(table)
    assert all(len(line) <= 80 and "…" not in line for line in table), table
    # Nothing but the table and the summary path after the title.
    after = out[next(i for i, line in enumerate(table) if line.startswith("└")) + title + 1:]
    assert after[0] == "summary:" and "".join(after[1:]) == summary["summary_path"], after

    noise = proc.stdout + proc.stderr
    assert "No complete tensor found" not in noise
    assert "Token authentication is enabled" not in noise

    log = (run_dir / "federated.log").read_text()
    for r in (1, 2, 3):
        assert f"round {r}/3 completed" in log, log
    assert '"epsilon"' in log
