"""Data sets and how they are split among federated participants."""

from rayfed.data.datasets import DATASETS, ArrayDataset, SplitLoader, load_splits
from rayfed.data.mnist1d import Mnist1dSpec, make_mnist1d
from rayfed.data.partition import (
    PARTITIONERS,
    Partitioner,
    dirichlet,
    iid,
    partition,
    shards,
    train_val_split,
)

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "ArrayDataset",
    "Mnist1dSpec",
    "Partitioner",
    "SplitLoader",
    "dirichlet",
    "iid",
    "load_splits",
    "make_mnist1d",
    "partition",
    "shards",
    "train_val_split",
]
