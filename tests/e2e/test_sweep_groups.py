"""Issue #17: a multirun over a config group and a key (`strategy=fedavg,fedprox
seed=0,1`) gives one table row per trial with every swept key as a column, and a
plot of every trial."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from rayfed.tracking.sweep import PARENT_FILE
from tests.conftest import REPO
from tests.e2e.test_federated_job import job_env
from tests.e2e.test_sweep import TINY

pytestmark = pytest.mark.slow


def test_sweep_over_a_group_and_a_key_tabulates_and_plots_every_trial(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_dir = tmp_path / "multirun"
    tiny = [o for o in TINY if not o.startswith("fl.rounds")] + ["fl.rounds=1"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "federated.py"), "-m", "strategy=fedavg,fedprox",
         "seed=0,1", *tiny, f"tracking.uri={uri}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep_dir / PARENT_FILE).exists()

    with (sweep_dir / "sweep_trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["strategy"], r["seed"]) for r in rows] == [
        ("fedavg", "0.0"), ("fedavg", "1.0"), ("fedprox", "0.0"), ("fedprox", "1.0")]
    assert all(float(r["accuracy"]) > 0 and r["status"] == "FINISHED" for r in rows)

    summary = (sweep_dir / "sweep_summary.md").read_text()
    assert "4 trials" in summary
    trials_table = summary.split("## trials", 1)[1]
    header = trials_table.strip().splitlines()[0]
    assert header.startswith("| strategy | seed | accuracy |")
    body = [line for line in trials_table.strip().splitlines()[2:] if line.startswith("|")]
    assert len(body) == 4
    assert sorted(line.split("|")[1].strip() for line in body) == [
        "fedavg", "fedavg", "fedprox", "fedprox"]
    by_setting = summary.split("## by setting", 1)[1].split("## trials")[0]
    assert "| fedavg | 2 |" in by_setting and "| fedprox | 2 |" in by_setting

    series = json.loads((sweep_dir / "sweep_accuracy.json").read_text())
    assert series["x_key"] == "strategy"
    assert sorted((t["x"], t["seed"]) for t in series["trials"]) == [
        ("fedavg", 0.0), ("fedavg", 1.0), ("fedprox", 0.0), ("fedprox", 1.0)]
    assert {t["run_id"] for t in series["trials"]} == {r["run_id"] for r in rows}
    assert [(m["x"], m["trials"]) for m in series["means"]] == [("fedavg", 2), ("fedprox", 2)]
    assert (sweep_dir / "sweep_accuracy.png").stat().st_size > 10_000
