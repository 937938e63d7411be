"""The ``dataset=files`` section as a :class:`~rayfed.data.schema.FileSource`, and
what the driver may know about the data before any site's file is opened.

The shared encoding can be written as flat ``dataset.*`` keys or kept in a YAML
file (``dataset.schema_path``, which ``rayfed.data.make_sites`` writes); a value
in the file fills a key left at its default, and a key set to something else in
both places is an error naming it. The input shape follows from the declaration
(numeric columns plus one-hot levels; image size and mode), so the driver can
build and check the model before Ray starts, and every host builds the same one.
Reading the schema file is the driver's only IO here; it holds no site's data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rayfed.data.schema import FileSource, resolve_format, source_problems

# The dataset section (rayfed.data.config.DatasetConfig), which imports this
# module: named here by its role only, to keep the import graph acyclic.
DatasetConfig = Any

# dataset=files keys and their defaults: set with another dataset, each is an error.
FILE_KEYS: dict[str, Any] = {
    "train_path": None, "test_path": None, "format": "auto", "label_column": "label",
    "classes": [], "num_classes": None, "numeric": None, "categorical": {}, "scaling": {},
    "drop": [], "image_size": None, "image_mode": "RGB", "schema_path": None,
    "input_shape": None,
}
# Keys schema.yaml may hold (the encoding, not the locations).
SCHEMA_KEYS = ("label_column", "classes", "num_classes", "numeric", "categorical", "scaling",
               "drop", "image_size", "image_mode", "format")


@dataclass(frozen=True)
class DataPlan:
    """What every process knows about the data before a file is opened.

    ``source`` is set for ``dataset=files``; ``input_shape`` and ``num_classes``
    whenever the driver could derive them (files, or a custom model's check).
    """

    source: FileSource | None = None
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None


def misplaced_file_keys(ds: DatasetConfig, *, allowed: tuple[str, ...] = ()) -> list[str]:
    """``dataset=files`` keys set while another data set is chosen (they would be ignored)."""
    return [f"dataset.{k}={getattr(ds, k)!r} only takes effect with dataset=files (each site "
            f"reads its own file), not dataset={ds.name}; drop it or add dataset=files"
            for k, default in FILE_KEYS.items()
            if k not in allowed and getattr(ds, k) != default]


def _read_schema(path: str) -> tuple[dict[str, Any], list[str]]:
    import yaml

    if not os.path.isfile(path):
        return {}, [f"dataset.schema_path={path!r} does not exist here (the driver reads it; "
                    "it holds the shared encoding, e.g. the schema.yaml make_sites writes)"]
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        return {}, [f"dataset.schema_path={path!r} is not valid YAML: {exc}"]
    if not isinstance(data, dict):
        return {}, [f"dataset.schema_path={path!r} must hold a mapping of dataset keys"]
    unknown = sorted(set(data) - set(SCHEMA_KEYS))
    problems = ([f"dataset.schema_path={path!r} has unknown key(s) {unknown}; it may hold "
                 f"{list(SCHEMA_KEYS)}"] if unknown else [])
    return {k: v for k, v in data.items() if k in SCHEMA_KEYS}, problems


def _merged(values: dict[str, Any], ds: DatasetConfig) -> tuple[dict[str, Any], list[str]]:
    if ds.schema_path is None:
        return values, []
    schema, problems = _read_schema(ds.schema_path)
    for k, v in schema.items():
        if values[k] == FILE_KEYS[k]:
            values[k] = v
        elif _plain(values[k]) != _plain(v):
            problems.append(f"dataset.{k}={values[k]!r} differs from {k}={v!r} in "
                            f"dataset.schema_path={ds.schema_path!r}; set it in one place")
    return values, problems


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def file_source(ds: DatasetConfig) -> tuple[FileSource | None, list[str]]:
    """The section's :class:`FileSource` and every problem of the declaration."""
    if ds.train_path is None:
        return None, ["dataset=files needs dataset.train_path, a template with "
                      "{participant_id}, e.g. \"dataset.train_path='/data/site_{participant_id}"
                      "/train.csv'\" (quoted for Hydra)"]
    v, problems = _merged({k: getattr(ds, k) for k in FILE_KEYS if k != "input_shape"}, ds)
    src = FileSource(
        train_path=v["train_path"], format=v["format"], test_path=v["test_path"],
        label_column=v["label_column"], classes=tuple(str(c) for c in v["classes"] or ()),
        num_classes=v["num_classes"],
        numeric=None if v["numeric"] is None else tuple(v["numeric"]),
        categorical={k: tuple(str(x) for x in levels)
                     for k, levels in (v["categorical"] or {}).items()},
        scaling={k: (float(p[0]), float(p[1])) if len(p) == 2 else tuple(p)  # type: ignore[misc]
                 for k, p in (v["scaling"] or {}).items()},
        drop=tuple(v["drop"] or ()),
        image_size=None if v["image_size"] is None else tuple(v["image_size"]),  # type: ignore[arg-type]
        image_mode=v["image_mode"])
    problems += source_problems(src)
    return src, problems


def declared_input_shape(src: FileSource) -> tuple[int, ...] | None:
    """The shape of one example as the declaration fixes it, or ``None`` when only
    the files can tell (undeclared numeric columns, NPZ arrays, unsized images)."""
    fmt = resolve_format(src.train_path, src.format)
    if fmt in ("csv", "parquet") and src.numeric is not None:
        return (len(src.numeric) + sum(len(v) for v in src.categorical.values()),)
    if fmt == "image_folder" and src.image_size is not None:
        return (1 if src.image_mode == "L" else 3, *src.image_size)
    return None


def files_plan(ds: DatasetConfig) -> tuple[DataPlan, list[str]]:
    """The data plan of ``dataset=files``, and what stops the driver from knowing it."""
    src, problems = file_source(ds)
    if src is None or problems:
        return DataPlan(src), problems
    shape = declared_input_shape(src) or (tuple(ds.input_shape) if ds.input_shape else None)
    if shape is None:
        problems.append(
            f"dataset.train_path={src.train_path!r}: the input shape cannot be known before "
            "the sites' files are read; declare the features (dataset.numeric, with "
            "dataset.categorical, for CSV or Parquet: dataset.schema_path from make_sites does "
            "it; dataset.image_size for an image folder) so that every site and the server "
            "build the same model; or set dataset.input_shape")
    return DataPlan(src, shape, src.num_labels), problems
