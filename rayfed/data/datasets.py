"""In-memory data sets and the registry that loads them as (train pool, test).

The train pool is what the partitioners in ``rayfed.data.partition`` split among
participants; the test set stays with the server for global evaluation.

* ``digits`` and ``breast_cancer`` ship with scikit-learn; ``mnist1d`` is
  generated locally (Greydanus 2020, see ``rayfed.data.mnist1d``). For these three
  the test set is a stratified hold-out drawn with ``seed``.
* ``mnist`` (LeCun et al. 1998) and ``cifar10`` (Krizhevsky 2009) are read with
  torchvision from files already under ``root`` and keep their official
  train/test splits. rayfed never downloads anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rayfed.data.cache import cached_splits
from rayfed.data.mnist1d import NUM_CLASSES as MNIST1D_CLASSES
from rayfed.data.mnist1d import make_mnist1d
from rayfed.errors import DataError


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Features ``x`` (float32, ``(n, *input_shape)``) and labels ``y`` (int64, ``(n,)``).

    ``eq=False`` because element-wise array comparison has no single truth value;
    two data sets are compared by their arrays, never by ``==``.
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        problems = []
        if self.y.ndim != 1:
            problems.append(f"y must be 1-D (got shape {self.y.shape})")
        elif self.x.shape[:1] != self.y.shape:
            problems.append(
                f"x and y must have the same number of rows (got {self.x.shape[0]} and "
                f"{self.y.shape[0]})"
            )
        if self.num_classes < 1:
            problems.append(f"num_classes must be >= 1 (got {self.num_classes})")
        elif self.y.size and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            problems.append(
                f"labels must lie in [0, {self.num_classes}) (got {self.y.min()}..{self.y.max()})"
            )
        if problems:
            raise DataError("invalid ArrayDataset: " + "; ".join(problems))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1, 8, 8)`` for digits."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray | Sequence[int]) -> ArrayDataset:
        """The examples at ``indices`` (e.g. one participant's partition), in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(x=self.x[idx], y=self.y[idx], num_classes=self.num_classes)


class SplitLoader(Protocol):
    """Loads one named data set as ``(train_pool, test)``."""

    def __call__(
        self, *, root: str | None, test_fraction: float, seed: int, num_samples: int
    ) -> tuple[ArrayDataset, ArrayDataset]: ...


def _stratified_split(
    x: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_pool, x_test, y_pool, y_test)`` with class proportions kept in both parts."""
    # Imported here: scikit-learn (with SciPy and pandas) costs about a second per
    # process, and a process that finds the split in the data cache never needs it.
    from sklearn.model_selection import train_test_split

    try:
        x_pool, x_test, y_pool, y_test = train_test_split(
            x, y, test_size=test_fraction, stratify=y, random_state=seed
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(y)} samples into a stratified test set with "
            f"dataset.test_fraction={test_fraction} ({exc}); use more samples "
            "(dataset.num_samples) or a test_fraction that leaves every class in both parts"
        ) from exc
    return x_pool, x_test, y_pool, y_test


def _digits(
    *, root: str | None, test_fraction: float, seed: int, num_samples: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's 1,797 8x8 digits, pixels scaled from [0, 16] to [0, 1]."""

    def build() -> Any:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # Image layout (channels, height, width) so a CNN works; an MLP flattens it.
        x = (bunch.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
        y = bunch.target.astype(np.int64)
        x_pool, x_test, y_pool, y_test = _stratified_split(x, y, test_fraction=test_fraction,
                                                           seed=seed)
        return (x_pool, y_pool), (x_test, y_test)

    (x_pool, y_pool), (x_test, y_test) = cached_splits(
        {"name": "digits", "test_fraction": test_fraction, "seed": seed}, build,
        packages=("scikit-learn",))
    return ArrayDataset(x_pool, y_pool, 10), ArrayDataset(x_test, y_test, 10)


def _breast_cancer(
    *, root: str | None, test_fraction: float, seed: int, num_samples: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """Wisconsin breast cancer: 569 samples, 30 features, 2 classes, standardised."""

    def build() -> Any:
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        x = bunch.data.astype(np.float64)
        y = bunch.target.astype(np.int64)
        x_pool, x_test, y_pool, y_test = _stratified_split(x, y, test_fraction=test_fraction,
                                                           seed=seed)
        # Statistics come from the whole train pool, i.e. from every participant's
        # data at once. The simulation treats them as public; a real federation
        # would agree on them up front (or compute them with secure aggregation).
        # Never from test.
        mean = x_pool.mean(axis=0)
        std = x_pool.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return (((x_pool - mean) / std).astype(np.float32), y_pool), \
            (((x_test - mean) / std).astype(np.float32), y_test)

    (x_pool, y_pool), (x_test, y_test) = cached_splits(
        {"name": "breast_cancer", "test_fraction": test_fraction, "seed": seed}, build,
        packages=("scikit-learn",))
    return ArrayDataset(x_pool, y_pool, 2), ArrayDataset(x_test, y_test, 2)


def _mnist1d(
    *, root: str | None, test_fraction: float, seed: int, num_samples: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """MNIST-1D (Greydanus 2020), ``num_samples`` generated examples of shape (1, 40)."""

    def build() -> Any:
        x, y = make_mnist1d(num_samples, rng=np.random.default_rng(seed))
        x_pool, x_test, y_pool, y_test = _stratified_split(
            x[:, None, :], y, test_fraction=test_fraction, seed=seed
        )
        return (x_pool, y_pool), (x_test, y_test)

    (x_pool, y_pool), (x_test, y_test) = cached_splits(
        {"name": "mnist1d", "test_fraction": test_fraction, "seed": seed,
         "num_samples": num_samples}, build, packages=("scikit-learn", "numpy"))
    return (
        ArrayDataset(x_pool, y_pool, MNIST1D_CLASSES),
        ArrayDataset(x_test, y_test, MNIST1D_CLASSES),
    )


def _torchvision_split(name: str, root: str | None, *, train: bool, layout: str) -> Any:
    """One split of a torchvision data set, read from ``root`` without downloading."""
    fix = (
        f"put the {name} files under that directory as {layout} (rayfed never downloads; "
        f"fetch them once with torchvision's download=True or by hand)"
    )
    if root is None:
        raise DataError(f"dataset.root is not set, but {name} is read from disk; set it and {fix}")
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise DataError(f"dataset.root={root!r} does not exist; create it and {fix}")
    try:
        import torchvision  # heavy and optional: only these two loaders need it
    except ImportError as exc:
        raise DataError(f"{name} needs torchvision; pip install torchvision") from exc
    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    try:
        return cls(root, train=train, download=False)
    except RuntimeError as exc:
        raise DataError(f"dataset.root={root!r} has no usable {name} files ({exc}); {fix}") from exc


def _mnist(
    *, root: str | None, test_fraction: float, seed: int, num_samples: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """MNIST's official 60k/10k split, shape (1, 28, 28), pixels in [0, 1]."""
    layout = "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"

    def arrays(train: bool) -> ArrayDataset:
        split = _torchvision_split("mnist", root, train=train, layout=layout)
        x = split.data.numpy().astype(np.float32)[:, None, :, :]
        x /= 255.0
        y = split.targets.numpy().astype(np.int64)
        return ArrayDataset(x, y, 10)

    return arrays(True), arrays(False)


def _cifar10(
    *, root: str | None, test_fraction: float, seed: int, num_samples: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-10's official 50k/10k split, shape (3, 32, 32), pixels in [0, 1]."""
    layout = "<root>/cifar-10-batches-py/ (the extracted cifar-10-python.tar.gz)"

    def arrays(train: bool) -> ArrayDataset:
        split = _torchvision_split("cifar10", root, train=train, layout=layout)
        # torchvision keeps CIFAR as (n, height, width, channels) uint8.
        x = np.ascontiguousarray(split.data.transpose(0, 3, 1, 2), dtype=np.float32)
        x /= 255.0
        y = np.asarray(split.targets, dtype=np.int64)
        return ArrayDataset(x, y, 10)

    return arrays(True), arrays(False)


DATASETS: dict[str, SplitLoader] = {
    "digits": _digits,
    "breast_cancer": _breast_cancer,
    "mnist1d": _mnist1d,
    "mnist": _mnist,
    "cifar10": _cifar10,
}


def load_splits(
    name: str,
    *,
    root: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    num_samples: int = 5000,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load data set ``name`` as ``(train_pool, test)``, deterministically in ``seed``.

    ``root`` is needed by ``mnist`` and ``cifar10`` only; ``num_samples`` is used by
    ``mnist1d`` only; ``test_fraction`` and ``seed`` are ignored by the data sets
    with an official test split (``mnist``, ``cifar10``).
    """
    if name not in DATASETS:
        raise DataError(f"dataset.name {name!r} is unknown; choose one of {sorted(DATASETS)}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(
            f"dataset.test_fraction must be in (0, 1) (got {test_fraction}); use e.g. 0.2"
        )
    return DATASETS[name](
        root=root, test_fraction=test_fraction, seed=seed, num_samples=num_samples
    )
