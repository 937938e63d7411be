"""Cross-device scale: 1,000 virtual participants on a 2-actor pool."""

from __future__ import annotations

import contextlib
import os
import threading

import psutil
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rayfed.config import register_configs, to_config
from rayfed.fl.orchestrator import Orchestrator
from tests.conftest import CONF

pytestmark = pytest.mark.usefixtures("ray_session")


class PeakMemory:
    """Peak of the summed proportional set size (PSS) of this process and all its
    descendants (Ray's GCS, raylet and workers), sampled in a thread."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        me = psutil.Process(os.getpid())
        total = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += p.memory_full_info().pss
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self.sample())

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_1000_participants_100_per_round_fit_in_6_gib(tmp_path):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_config(compose("config", overrides=[
            "experiment=cross_device", "fl.rounds=3", "tracking.enabled=false",
            f"checkpoint.dir={tmp_path}"]))
    assert cfg.fl.num_clients == 1000 and cfg.fl.clients_per_round == 100
    with PeakMemory() as mem, Orchestrator(cfg) as orch:
        history = list(orch.rounds())
        assert len(orch.placement.actors) == 2
    assert [r.status for r in history] == ["completed"] * 3
    assert all(r.num_reported == 100 for r in history)
    assert mem.peak_bytes < 6 * 2**30, f"peak {mem.peak_bytes / 2**30:.2f} GiB"
    print(f"peak PSS of all processes: {mem.peak_bytes / 2**30:.2f} GiB")
