"""A participant's shard, built where the participant lives.

Every process that hosts participants builds the same deterministic partition
from (dataset, partition, seed) and cuts out only the shards it serves. The
driver never holds a participant's data: it only names participant ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rayfed.data.config import DatasetConfig, PartitionConfig
from rayfed.data.datasets import ArrayDataset, load_splits
from rayfed.data.partition import partition, train_val_split


@dataclass(frozen=True)
class ClientData:
    participant_id: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def _tensors(ds: ArrayDataset, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(ds.x[idx])), torch.from_numpy(ds.y[idx])


def load_test_split(dataset: DatasetConfig) -> ArrayDataset:
    """The held-out global test split, for central evaluation at the server."""
    _, test = load_splits(dataset.name, root=dataset.root, test_fraction=dataset.test_fraction,
                          seed=dataset.seed, num_samples=dataset.num_samples)
    return test


class FederatedData:
    """The partitioned training pool; hands out one participant's shard at a time."""

    def __init__(self, dataset: DatasetConfig, part: PartitionConfig, *, num_clients: int,
                 seed: int) -> None:
        self._pool, _ = load_splits(dataset.name, root=dataset.root,
                                    test_fraction=dataset.test_fraction, seed=dataset.seed,
                                    num_samples=dataset.num_samples)
        self._val_fraction = dataset.val_fraction
        self._seed = seed
        rng = np.random.default_rng([seed, 0x9A27])
        self._indices = partition(self._pool.y, num_clients, scheme=part.name, rng=rng,
                                  alpha=part.alpha, shards_per_client=part.shards_per_client,
                                  min_samples=part.min_samples)
        self._cache: dict[int, ClientData] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._pool.input_shape

    @property
    def num_classes(self) -> int:
        return self._pool.num_classes

    def shard_sizes(self) -> list[int]:
        return [len(i) for i in self._indices]

    def client(self, participant_id: int) -> ClientData:
        if participant_id not in self._cache:
            rng = np.random.default_rng([self._seed, 0x5A11, participant_id])
            train_idx, val_idx = train_val_split(self._indices[participant_id],
                                                 val_fraction=self._val_fraction, rng=rng)
            x_tr, y_tr = _tensors(self._pool, train_idx)
            x_va, y_va = _tensors(self._pool, val_idx)
            self._cache[participant_id] = ClientData(participant_id, x_tr, y_tr, x_va, y_va)
        return self._cache[participant_id]
