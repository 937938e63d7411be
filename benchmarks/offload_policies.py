"""Offloading policies against the makespan lower bound (issue #6, gathered for #10).

Runs the offloading job exactly as a user would (``python jobs/offload.py``, all
policies on one seeded task stream over the default emulated edge/cloud fleet)
and reports its policy table: latency percentiles, deadline misses, and each
policy's makespan divided by the workload's makespan lower bound
(``rayfed.offload.bounds``), with issue 6's acceptance block.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="40 tasks instead of 100")
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--timeout-s", type=float, default=600.0)
    args = ap.parse_args(argv)
    tasks = 40 if args.quick else args.tasks
    out = Path(tempfile.mkdtemp(prefix="rayfed-bench-offload-"))
    cmd = [sys.executable, "jobs/offload.py", f"offload.num_tasks={tasks}",
           "tracking.enabled=false", f"hydra.run.dir={out}",
           # A Ray of its own (all cores), not the newest one running on the machine.
           "ray_address=local"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=args.timeout_s, check=False)
    summary_path = out / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        return {"command": " ".join(cmd[1:]),
                "error": f"exit {proc.returncode}: {proc.stderr[-600:]}"}
    return {"command": " ".join(cmd[1:]), "summary": json.loads(summary_path.read_text())}


def report(result: dict[str, Any]) -> str:
    from rayfed.offload.job import markdown_table

    head = f"Job command: `python {result['command']}` (hydra.run.dir is a temporary folder)."
    if "error" in result:
        return f"{head}\n\nnot run: {result['error']}"
    return f"{head}\n\n{markdown_table(result['summary'])}"


if __name__ == "__main__":
    print(report(main()))
