"""rayfed.job.run_job through the real command line: exit 2 for configuration,
1 for runtime errors, one line naming the cause and no traceback unless asked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rayfed.errors import RayfedError
from rayfed.job import EXIT_CONFIG, EXIT_RUNTIME, TRACEBACK_ENV, run_job
from tests.conftest import REPO


def job(tmp_path: Path, script: str, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    # A Ray temp dir of the test's own: a `ray start` elsewhere on this machine is not seen.
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", TRACEBACK_ENV)}
    return subprocess.run(
        [sys.executable, script, *overrides, f"hydra.run.dir={tmp_path / 'out'}",
         f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**base, "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(tmp_path), **env})


def test_config_problems_exit_2_naming_every_key_before_anything_starts(tmp_path):
    proc = job(tmp_path, "jobs/train_ddp.py", "train.epochs=0", "train.num_workers=0")
    assert proc.returncode == EXIT_CONFIG, proc.stderr[-2000:]
    assert "train.epochs=0 must be >= 1" in proc.stderr
    assert "train.num_workers" in proc.stderr
    assert "nothing was started" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_address_auto_without_a_cluster_exits_1_naming_the_key(tmp_path):
    t0 = time.perf_counter()
    proc = job(tmp_path, "jobs/federated.py", "runtime.address=auto", "fl.rounds=1")
    assert proc.returncode == EXIT_RUNTIME, proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("rayfed:")]
    assert "runtime.address=auto" in line and "ray start --head" in line
    assert "python -m rayfed.cluster.local up" in line
    assert "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "FAILED" and "runtime.address=auto" in summary["error"]
    assert "Traceback" in summary["traceback"]
    assert time.perf_counter() - t0 < 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_recorded_cluster_that_is_gone_fails_fast_with_the_traceback_on_request(tmp_path):
    # `ray start` recorded a cluster that has since stopped: nothing listens there.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    t0 = time.perf_counter()
    proc = job(tmp_path, "jobs/offload.py", "ray_address=auto", **{TRACEBACK_ENV: "1"})
    took = time.perf_counter() - t0
    assert proc.returncode == EXIT_RUNTIME, proc.stderr[-2000:]
    assert "ray_address='auto': nothing answers at 127.0.0.1:" in proc.stderr
    assert "Traceback" in proc.stderr  # asked for with RAYFED_TRACEBACK=1
    assert took < 30


@dataclass
class Small:
    steps: int = 1
    output_dir: str = "."


def problems(cfg: Small) -> list[str]:
    return [] if cfg.steps >= 1 else [f"steps={cfg.steps} must be >= 1"]


def test_an_unexpected_error_prints_its_type_and_how_to_get_the_traceback(tmp_path, capsys):
    def run(cfg: Small) -> None:
        raise ZeroDivisionError("division by zero in step 3")

    with pytest.raises(SystemExit) as info:
        run_job(Small(output_dir=str(tmp_path)), convert=lambda c: c, check=problems, run=run)
    assert info.value.code == EXIT_RUNTIME
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unexpected ZeroDivisionError: division by zero in step 3" in err
    assert f"{TRACEBACK_ENV}=1" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "FAILED"
    assert summary["error"] == "ZeroDivisionError: division by zero in step 3"


def test_a_rayfed_error_prints_its_message_alone(tmp_path, capsys):
    def run(cfg: Small) -> None:
        raise RayfedError("checkpoint ckpt/run-1 belongs to another config; set resume=false")

    with pytest.raises(SystemExit) as info:
        run_job(Small(output_dir=str(tmp_path)), convert=lambda c: c, check=problems, run=run)
    assert info.value.code == EXIT_RUNTIME
    assert capsys.readouterr().err == ("rayfed: run FAILED: checkpoint ckpt/run-1 belongs to "
                                      "another config; set resume=false\n")


def test_the_run_value_is_returned_and_bad_config_never_runs(tmp_path, capsys):
    ran: list[int] = []

    def run(cfg: Small) -> float:
        ran.append(cfg.steps)
        return 0.5

    assert run_job(Small(steps=2, output_dir=str(tmp_path)), convert=lambda c: c,
                   check=problems, run=run) == 0.5
    with pytest.raises(SystemExit) as info:
        run_job(Small(steps=0), convert=lambda c: c, check=problems, run=run)
    assert info.value.code == EXIT_CONFIG and ran == [2]
    assert "steps=0 must be >= 1" in capsys.readouterr().err
