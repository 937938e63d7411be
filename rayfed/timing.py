"""Phase timestamps of a job, for the time-to-result benchmark (issue #18).

``RAYFED_TIMING=1`` prints one line per phase boundary to stderr,
``RAYFED_TIMING=<path>`` appends them to that file; unset (the default) costs one
environment lookup per mark. A line is ``rayfed-timing <phase> <unix time>``:
wall-clock time, so that a launcher can subtract its own launch stamp and get the
interpreter's start-up too. The phases, in order, are those of
``jobs/federated.py`` (imports, preflight, hydra, plan, ray_init, actors_created,
actors_ready, tracker_started, setup, rounds, artifacts, closed);
``benchmarks/time_to_result.py`` turns them into a breakdown.
"""

from __future__ import annotations

import os
import sys
import time

TIMING_ENV = "RAYFED_TIMING"
TAG = "rayfed-timing"


def mark(phase: str) -> None:
    """Record that ``phase`` ended now, if ``RAYFED_TIMING`` asks for it."""
    where = os.environ.get(TIMING_ENV, "")
    if where in ("", "0"):
        return
    line = f"{TAG} {phase} {time.time():.6f}\n"
    if where == "1":
        sys.stderr.write(line)
        sys.stderr.flush()
        return
    with open(where, "a") as f:
        f.write(line)


def parse(text: str) -> dict[str, float]:
    """``{phase: unix time}`` from the lines :func:`mark` wrote (the last of each)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == TAG:
            out[parts[1]] = float(parts[2])
    return out
