"""The ``dataset`` and ``partition`` sections of the config, and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayfed.data.datasets import DATASETS
from rayfed.data.partition import PARTITIONERS

# Each site reads its own file (rayfed.data.files); not a registry entry.
FILES = "files"
# The sites' data comes from rayfed.run(participant_data=...).
CUSTOM_DATA = "custom"


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
    # -- dataset=files: each site reads its own file (docs/your_own_data.md) --
    # A template with {participant_id}; quote it for Hydra's override grammar.
    train_path: str | None = None
    # The server's held-out file; null: federated evaluation on the sites' val splits.
    test_path: str | None = None
    # auto (from the file's suffix), csv, parquet, npz or image_folder.
    format: str = "auto"
    # The column holding each row's label (csv, parquet).
    label_column: str = "label"
    # The label values in class-id order, or num_classes for labels 0..n-1.
    classes: list[str] = field(default_factory=list)
    # The number of classes when labels are already 0..n-1 (instead of classes).
    num_classes: int | None = None
    # Numeric feature columns in order (null: every other column), then one-hot
    # blocks over the declared levels of each categorical column.
    numeric: list[str] | None = None
    # column -> its levels, one-hot encoded in this order at every site.
    categorical: dict[str, list[str]] = field(default_factory=dict)
    # column -> [center, scale], agreed by all sites.
    scaling: dict[str, list[float]] = field(default_factory=dict)
    # Columns every site leaves out (identifiers, dates).
    drop: list[str] = field(default_factory=list)
    # image_folder: every image resized to [height, width].
    image_size: list[int] | None = None
    # image_folder: RGB (3 channels) or L (grey, 1 channel).
    image_mode: str = "RGB"
    # A YAML file with the keys above that describe the encoding (make_sites writes one).
    schema_path: str | None = None
    # One example's shape, where the driver cannot derive it (NPZ files, or
    # rayfed.run(participant_data=...) without test_data).
    input_shape: list[int] | None = None


@dataclass
class PartitionConfig:
    name: str = "dirichlet"
    alpha: float = 0.5
    shards_per_client: int = 2
    min_samples: int = 2


def dataset_problems(ds: DatasetConfig) -> list[str]:
    """Problems of the section; for ``dataset=files`` it reads ``dataset.schema_path``
    (the shared encoding, never a site's file)."""
    from rayfed.data.source import files_plan, misplaced_file_keys

    p: list[str] = []
    if ds.name == FILES:
        p += files_plan(ds)[1]
    elif ds.name == CUSTOM_DATA:
        p += misplaced_file_keys(ds, allowed=("input_shape", "num_classes"))
    elif ds.name not in DATASETS:
        p.append(f"dataset={ds.name!r} is not one of {sorted([*DATASETS, FILES])}; pick one "
                 "of those")
    else:
        p += misplaced_file_keys(ds)
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
