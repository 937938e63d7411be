"""Shared fixtures: one local Ray per test session, and small typed configs."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rayfed.config import (
    CheckpointConfig,
    Config,
    DatasetConfig,
    FLConfig,
    ModelConfig,
    PartitionConfig,
    RuntimeConfig,
    TrackingConfig,
)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs, started once and shared by every test that needs it."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        # address="local": a new Ray even while `ray start` (rayfed.cluster.local)
        # runs on this machine; without it ray.init joins that cluster and refuses
        # num_cpus.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def small_config(tmp_path: Path, **sections: Any) -> Config:
    """digits, 6 participants, all per round, a small MLP: seconds per run."""
    cfg = Config(
        name="test",
        seed=0,
        dataset=DatasetConfig(name="digits"),
        model=ModelConfig(name="mlp", hidden_sizes=[32]),
        partition=PartitionConfig(name="iid"),
        fl=FLConfig(num_clients=6, clients_per_round=6, min_clients=3, rounds=2,
                    local_epochs=1, batch_size=32, lr=0.1, round_timeout_s=60),
        runtime=RuntimeConfig(placement="pooled", pool_size=2),
        tracking=TrackingConfig(enabled=False, uri=f"sqlite:///{tmp_path}/mlflow.db"),
        checkpoint=CheckpointConfig(enabled=False, dir=str(tmp_path / "ckpt")),
        output_dir=str(tmp_path),
    )
    for name, value in sections.items():
        if isinstance(value, dict):
            value = replace(getattr(cfg, name), **value)
        cfg = replace(cfg, **{name: value})
    return cfg
