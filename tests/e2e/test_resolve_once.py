"""One run validates its config once and solves σ once, in every process (issue #14).

The count is taken through the real command line: a ``sitecustomize`` module on
``PYTHONPATH`` wraps :func:`rayfed.config.validate` and
:func:`rayfed.privacy.accounting.solve_noise_multiplier` in *every* Python process
of the run (the driver, and the Ray workers that host the participants, which
inherit the environment), and each call appends a line to a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SITECUSTOMIZE = '''
import importlib.abc, importlib.machinery, os, sys

LOG = os.environ["RAYFED_CALL_LOG"]
WRAP = {"rayfed.config": "validate", "rayfed.privacy.accounting": "solve_noise_multiplier"}


def _wrap(module, name):
    original = getattr(module, name)

    def counted(*args, **kwargs):
        with open(LOG, "a") as f:
            f.write(f"{name} {os.getpid()}\\n")
        return original(*args, **kwargs)

    setattr(module, name, counted)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in WRAP:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            _wrap(module, WRAP[fullname])

        spec.loader.exec_module = exec_and_wrap
        return spec


sys.meta_path.insert(0, _Finder())
'''


def test_one_run_validates_once_and_solves_sigma_once(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "calls.log"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=f"{hook}{os.pathsep}{REPO}", RAYFED_CALL_LOG=str(log))
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "federated.py"), "privacy=central_dp",
         "privacy.target_epsilon=5", "privacy.noise_placement=clients", "fl.rounds=3",
         "fl.num_clients=8", "fl.clients_per_round=4", "fl.min_clients=1",
         "runtime.placement=pooled",
         "runtime.pool_size=4", "runtime.num_cpus=2", "runtime.actor_num_cpus=0.5",
         "tracking.enabled=false", "checkpoint.enabled=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = log.read_text().split()
    names = calls[0::2]
    # Four pooled actors built their pipelines (σ is in every noise stage), yet σ
    # was solved once, in the driver, and the config validated once.
    assert names.count("validate") == 1, calls
    assert names.count("solve_noise_multiplier") == 1, calls
    assert "summary.json" in proc.stdout or "summary" in proc.stdout
