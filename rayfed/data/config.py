"""The ``dataset`` and ``partition`` sections of the config, and their checks."""

from __future__ import annotations

from dataclasses import dataclass

from rayfed.data.datasets import DATASETS
from rayfed.data.partition import PARTITIONERS


@dataclass
class DatasetConfig:
    name: str = "digits"
    # Directory with the torchvision files for `mnist` / `cifar10`; never downloaded.
    root: str | None = None
    test_fraction: float = 0.2
    # Each participant keeps this share of its shard for local validation.
    val_fraction: float = 0.1
    # mnist1d only: how many sequences to generate.
    num_samples: int = 5000
    # Seed of the data itself (generation and the held-out test split), kept apart
    # from the experiment seed so that every experiment sees the same test set.
    seed: int = 0


@dataclass
class PartitionConfig:
    name: str = "dirichlet"
    alpha: float = 0.5
    shards_per_client: int = 2
    min_samples: int = 2


def dataset_problems(ds: DatasetConfig) -> list[str]:
    p: list[str] = []
    if ds.name not in DATASETS:
        p.append(f"dataset={ds.name!r} is not one of {sorted(DATASETS)}; pick one of those")
    if not 0 < ds.test_fraction < 1:
        p.append(f"dataset.test_fraction={ds.test_fraction} must be in (0, 1), e.g. 0.2")
    if not 0 <= ds.val_fraction < 1:
        p.append(f"dataset.val_fraction={ds.val_fraction} must be in [0, 1), e.g. 0.1")
    if ds.num_samples < 100:
        p.append(f"dataset.num_samples={ds.num_samples} must be >= 100")
    return p


def partition_problems(part: PartitionConfig) -> list[str]:
    p: list[str] = []
    if part.name not in PARTITIONERS:
        p.append(f"partition={part.name!r} is not one of {sorted(PARTITIONERS)}; pick one "
                 "of those")
    if not part.alpha > 0:
        p.append(f"partition.alpha={part.alpha} must be > 0; use a positive Dirichlet "
                 "concentration such as 0.5 (smaller = more label skew)")
    if part.shards_per_client < 1:
        p.append(f"partition.shards_per_client={part.shards_per_client} must be >= 1")
    if part.min_samples < 1:
        p.append(f"partition.min_samples={part.min_samples} must be >= 1")
    return p
