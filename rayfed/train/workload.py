"""What the DDP job trains on: a real data set, or labelled synthetic tensors.

The small data sets (digits, mnist1d) measure accuracy. CIFAR-10 (Krizhevsky
2009) is read from local files when they exist; without them, and only when
asked, the job trains on random tensors of CIFAR-10's shape so that throughput
(samples per second, AMP against fp32) can still be measured. Such a run says
so everywhere and reports no accuracy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from rayfed.data import load_splits
from rayfed.data.config import DatasetConfig
from rayfed.errors import DataError

CIFAR10_SHAPE = (3, 32, 32)
log = logging.getLogger(__name__)

SYNTHETIC_LABEL = "synthetic CIFAR-10-shaped tensors (throughput only, no accuracy)"


@dataclass(frozen=True, eq=False)
class Workload:
    """Arrays a worker trains on; ``x_test`` is None when accuracy is meaningless."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    source: str

    @property
    def synthetic(self) -> bool:
        return self.source == SYNTHETIC_LABEL

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def synthetic_cifar10(num_examples: int, *, rng: np.random.Generator) -> Workload:
    """Uniform pixels and uniform labels: a CNN's cost without a data set's meaning."""
    x = rng.random((num_examples, *CIFAR10_SHAPE), dtype=np.float32)
    y = rng.integers(0, 10, size=num_examples, dtype=np.int64)
    return Workload(x, y, None, None, 10, SYNTHETIC_LABEL)


@dataclass(frozen=True)
class DataSource:
    """A recipe every worker follows to load the same workload itself, so that
    large arrays never travel through the trainer's config."""

    dataset: DatasetConfig
    synthetic_if_missing: bool = False
    synthetic_examples: int = 8192
    seed: int = 0

    def load(self) -> Workload:
        ds = self.dataset
        try:
            train, test = load_splits(ds.name, root=ds.root, test_fraction=ds.test_fraction,
                                      seed=ds.seed, num_samples=ds.num_samples)
        except DataError as exc:
            if not (self.synthetic_if_missing and ds.name == "cifar10"):
                raise
            log.warning("no usable CIFAR-10 (%s); training on %s", exc, SYNTHETIC_LABEL)
            return synthetic_cifar10(self.synthetic_examples,
                                     rng=np.random.default_rng(self.seed))
        where = f" files under {ds.root}" if ds.root else ""
        return Workload(train.x, train.y, test.x, test.y, train.num_classes,
                        f"{ds.name}{where}")
