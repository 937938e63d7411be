"""The real command line refuses a bad config before starting Ray, naming every key."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_bad_command_line_lists_every_problem_and_starts_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "jobs/offload.py", "offload.policy=fastest", "offload.num_tasks=0",
         "offload.fleet.devices.cloud.count=0", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2  # configuration, not runtime
    for key in ("offload.policy='fastest'", "offload.num_tasks=0",
                "offload.fleet has no cloud worker"):
        assert key in proc.stderr
    assert "Started a local Ray" not in proc.stderr + proc.stdout
    assert "nothing was started" in proc.stderr and "Traceback" not in proc.stderr
