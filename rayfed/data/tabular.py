"""One site's table (CSV or Parquet) as float32 features and int64 labels.

The encoding is the one the config declares (:class:`~rayfed.data.schema.FileSource`),
never one inferred from the file, so that two sites with different values still
produce the same feature layout: numeric columns (optionally shifted and scaled
by agreed constants), then a one-hot block per categorical column over its
declared levels. A value a site has that the declaration lacks is an error that
names the site, the column and the value, not a silently different encoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rayfed.data.schema import FileSource, encode_labels

if TYPE_CHECKING:
    import pandas as pd


def read_frame(path: str, fmt: str, src: FileSource) -> pd.DataFrame:
    """The table at ``path``; label and categorical columns are read as text."""
    import pandas as pd  # ~0.5 s to import; only participants that read tables pay it

    if fmt == "parquet":
        return pd.read_parquet(path)
    text_cols = {src.label_column: str, **{c: str for c in src.categorical}}
    # keep_default_na=False: a level spelled "NA" or "None" is a value, not a gap;
    # na_values=[""] still marks an empty cell as missing.
    return pd.read_csv(path, dtype=text_cols, keep_default_na=False, na_values=[""])


def feature_columns(columns: list[str], src: FileSource) -> list[str]:
    """Numeric feature columns: declared, or every column not otherwise named."""
    if src.numeric is not None:
        return list(src.numeric)
    named = {src.label_column, *src.categorical, *src.drop}
    return [c for c in columns if c not in named]


def feature_names(columns: list[str], src: FileSource) -> tuple[str, ...]:
    """The name of each encoded feature, in order: ``col`` or ``col=level``."""
    onehot = [f"{c}={lvl}" for c, levels in src.categorical.items() for lvl in levels]
    return (*feature_columns(columns, src), *onehot)


def column_problems(columns: list[str], src: FileSource, *, where: str) -> list[str]:
    """Declared columns the file lacks, and (with declared numerics) columns it adds."""
    declared = [src.label_column, *feature_columns(columns, src), *src.categorical, *src.drop]
    problems = []
    missing = [c for c in declared if c not in columns]
    if missing:
        problems.append(f"{where} lacks column(s) {missing} that the dataset config names "
                        f"(the file has {columns}); fix the file or the config")
    extra = [c for c in columns if c not in declared]
    if src.numeric is not None and extra:
        problems.append(f"{where} has column(s) {extra} that the dataset config does not "
                        "name; add them to dataset.numeric or dataset.categorical, or to "
                        "dataset.drop to ignore them")
    return problems


def _numeric_block(frame: pd.DataFrame, cols: list[str], src: FileSource,
                   where: str) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    problems, out = [], np.empty((len(frame), len(cols)), np.float32)
    for j, col in enumerate(cols):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            first = frame[col].iloc[int(np.argmax(bad))]
            problems.append(f"{where}: column {col!r} has {int(bad.sum())} missing or "
                            f"non-numeric value(s) (first: {first!r} in data row "
                            f"{int(np.argmax(bad)) + 1}); fill them or list {col!r} in "
                            "dataset.categorical")
            continue
        center, scale = src.scaling.get(col, (0.0, 1.0))
        out[:, j] = (values - center) / scale
    return out, problems


def _onehot_block(frame: pd.DataFrame, src: FileSource,
                  where: str) -> tuple[np.ndarray, list[str]]:
    blocks, problems = [], []
    for col, levels in src.categorical.items():
        values = frame[col].fillna("<missing>").astype(str).to_numpy()
        index = {lvl: i for i, lvl in enumerate(levels)}
        unseen = sorted({v for v in values if v not in index})
        if unseen:
            problems.append(f"{where}: column {col!r} has value(s) {unseen[:10]} that are not "
                            f"among dataset.categorical.{col}={list(levels)}; add them to that "
                            "list (at every site alike) or fix the file")
            continue
        block = np.zeros((len(values), len(levels)), np.float32)
        block[np.arange(len(values)), [index[v] for v in values]] = 1.0
        blocks.append(block)
    width = sum(len(levels) for levels in src.categorical.values())
    out = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0), np.float32)
    return (out if out.shape[1] == width else np.zeros((len(frame), width), np.float32)), problems


def encode_frame(frame: pd.DataFrame, src: FileSource, *,
                 where: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(x, y, problems)``: features ``(n, num_features)`` float32, labels int64.

    The arrays are meaningful only when ``problems`` is empty; every problem of
    the file is collected, not just the first.
    """
    columns = [str(c) for c in frame.columns]
    problems = column_problems(columns, src, where=where)
    if problems:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), problems
    if len(frame) == 0:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), [
            f"{where} has no data rows; a site needs at least one example"]
    labels = frame[src.label_column]
    if labels.isna().any():
        problems.append(f"{where}: column {src.label_column!r} (dataset.label_column) has "
                        f"{int(labels.isna().sum())} empty label(s); every row needs a label")
        y = np.zeros(0, np.int64)
    else:
        y, label_problems = encode_labels(labels.to_numpy(), src, where=where,
                                          column=src.label_column)
        problems += label_problems
    num, num_problems = _numeric_block(frame, feature_columns(columns, src), src, where)
    onehot, cat_problems = _onehot_block(frame, src, where)
    problems += num_problems + cat_problems
    return np.concatenate([num, onehot], axis=1), y, problems
