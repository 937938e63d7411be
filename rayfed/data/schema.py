"""What every site's files must look like, declared once and checked per site.

In cross-silo federated learning each site (hospital) holds its own files, and
nothing but model updates leaves it. Sites must still encode their data
identically, or the same weight would mean a different feature at each site:
the label numbering, the feature columns and their order, the one-hot levels of
categorical columns and any scaling are therefore *declared* in the config
(:class:`FileSource`) instead of being inferred from one site's file.

:func:`source_problems` checks the declaration itself (no file is opened);
:class:`SiteSchema` is what one site reports about its own file (names and
shapes, never values); :func:`site_mismatches` compares those reports across
sites in the driver, before round 1.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

FileFormat = Literal["auto", "csv", "parquet", "npz", "image_folder"]
FORMATS: tuple[str, ...] = ("auto", "csv", "parquet", "npz", "image_folder")
PLACEHOLDER = "participant_id"
_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}


@dataclass(frozen=True)
class FileSource:
    """One data set spread over per-site files (the ``dataset=files`` section).

    ``train_path`` is a template such as ``/data/site_{participant_id}/train.csv``.
    Labels are numbered by ``classes`` (label values as text, in class-id order) or,
    for integer labels ``0..num_classes-1``, by ``num_classes``. Tabular features
    are ``numeric`` (``None``: every column not otherwise named, in file order)
    then the one-hot ``categorical`` levels, in declaration order.
    """

    train_path: str
    format: FileFormat = "auto"
    test_path: str | None = None
    label_column: str = "label"
    classes: tuple[str, ...] = ()
    num_classes: int | None = None
    numeric: tuple[str, ...] | None = None
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # column -> (center, scale): x' = (x - center) / scale, agreed by all sites.
    scaling: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    # (height, width) every image is resized to; None: all must share one size.
    image_size: tuple[int, int] | None = None
    image_mode: Literal["RGB", "L"] = "RGB"

    @property
    def num_labels(self) -> int | None:
        return len(self.classes) if self.classes else self.num_classes


@dataclass(frozen=True)
class SiteSchema:
    """One site's description of its own file: names and shapes, no values."""

    participant_id: int
    path: str
    features: tuple[str, ...]
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    num_examples: int
    problems: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return site_label(self.participant_id, self.path)


def site_label(participant_id: int, path: str) -> str:
    return f"site {participant_id} ({path})"


def _fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return [f"<{exc}>"]


def site_path(template: str, participant_id: int) -> str:
    """``template`` with ``{participant_id}`` filled in (``dataset.train_path``)."""
    bad = [f for f in _fields(template) if f != PLACEHOLDER]
    if bad:
        raise ValueError(f"dataset.train_path={template!r} has placeholder(s) {bad}; only "
                         f"{{{PLACEHOLDER}}} is filled in (write a literal brace as {{{{ }}}})")
    return template.format(participant_id=participant_id)


def resolve_format(path: str, fmt: str) -> str | None:
    """``fmt``, or for ``auto`` the format that the path's name or kind implies."""
    if fmt != "auto":
        return fmt
    if os.path.isdir(path):
        return "image_folder"
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def _label_problems(src: FileSource) -> list[str]:
    problems = []
    if not src.classes and src.num_classes is None:
        problems.append("set dataset.classes (the label values, in class-id order) or "
                        "dataset.num_classes (labels 0..n-1), so that every site numbers "
                        "the classes alike")
    if src.num_classes is not None and src.num_classes < 1:
        problems.append(f"dataset.num_classes must be >= 1 (got {src.num_classes})")
    if src.classes and src.num_classes is not None and len(src.classes) != src.num_classes:
        problems.append(f"dataset.classes has {len(src.classes)} entries but "
                        f"dataset.num_classes={src.num_classes}; drop one or make them agree")
    if len(set(src.classes)) != len(src.classes):
        problems.append(f"dataset.classes has duplicates: {list(src.classes)}")
    return problems


def _column_problems(src: FileSource) -> list[str]:
    problems = []
    named = [("dataset.label_column", [src.label_column]), ("dataset.numeric", src.numeric or []),
             ("dataset.categorical", list(src.categorical)), ("dataset.drop", list(src.drop))]
    seen: dict[str, str] = {}
    for key, cols in named:
        for col in cols:
            if col in seen:
                problems.append(f"column {col!r} is named by both {seen[col]} and {key}; "
                                "name each column once")
            seen.setdefault(col, key)
    for col, levels in src.categorical.items():
        if not levels or len(set(levels)) != len(levels):
            problems.append(f"dataset.categorical.{col} must list its levels once each "
                            f"(got {list(levels)})")
    for col, pair in src.scaling.items():
        if col in src.categorical or col == src.label_column or col in src.drop or (
                src.numeric is not None and col not in src.numeric):
            problems.append(f"dataset.scaling.{col}: {col!r} is not a numeric feature column")
        if len(pair) != 2 or not pair[1] > 0:
            problems.append(f"dataset.scaling.{col} must be [center, scale] with scale > 0 "
                            f"(got {list(pair)})")
    return problems


def source_problems(src: FileSource) -> list[str]:
    """Every problem of the declaration itself, each naming its key; opens no file."""
    problems = []
    if src.format not in FORMATS:
        problems.append(f"dataset.format={src.format!r} is unknown; choose one of "
                        f"{list(FORMATS)}")
    fields = _fields(src.train_path)
    if fields != [PLACEHOLDER] * len(fields) or not fields:
        problems.append(f"dataset.train_path={src.train_path!r} must contain "
                        f"{{{PLACEHOLDER}}} and no other placeholder, so that each site reads "
                        "its own file (quote it for Hydra: \"dataset.train_path='...'\")")
    if src.test_path is not None and _fields(src.test_path):
        problems.append(f"dataset.test_path={src.test_path!r} is the server's one file; it "
                        "takes no placeholder")
    if src.image_size is not None and (len(src.image_size) != 2 or min(src.image_size) < 1):
        problems.append(f"dataset.image_size must be [height, width] (got {src.image_size})")
    return problems + _label_problems(src) + _column_problems(src)


def encode_labels(values: Sequence[object] | np.ndarray, src: FileSource, *,
                  where: str, column: str) -> tuple[np.ndarray, list[str]]:
    """Label values (any type, compared as text) as int64 class ids, and the problems."""
    text = np.asarray([str(v) for v in values], dtype=object)
    if src.classes:
        index = {c: i for i, c in enumerate(src.classes)}
        unseen = sorted({v for v in text if v not in index})
        if unseen:
            return np.zeros(0, np.int64), [
                f"{where}: column {column!r} has label(s) {unseen[:10]} that are not in "
                f"dataset.classes={list(src.classes)}; add them there, or fix the file"]
        return np.fromiter((index[v] for v in text), np.int64, len(text)), []
    n = src.num_classes or 0
    valid = {str(i): i for i in range(n)}
    unseen = sorted({v for v in text if v not in valid})
    if unseen:
        return np.zeros(0, np.int64), [
            f"{where}: column {column!r} has label(s) {unseen[:10]} outside 0..{n - 1} "
            f"(dataset.num_classes={n}); set dataset.classes to the label values instead"]
    return np.fromiter((valid[v] for v in text), np.int64, len(text)), []


def _diff(name: str, mine: Sequence[str], ref: Sequence[str]) -> str:
    extra = [c for c in mine if c not in ref]
    missing = [c for c in ref if c not in mine]
    if not extra and not missing:
        return f"the same {name} in another order"
    return f"{name} only here: {extra}, {name} missing here: {missing}"


def site_mismatches(schemas: Sequence[SiteSchema]) -> list[str]:
    """Differences between sites' reports, each naming the site, against the first site.

    Declared columns and classes are checked inside each site; this catches what
    a site cannot see alone: undeclared feature columns or image class folders
    that differ, and inputs of different shapes.
    """
    if not schemas:
        return []
    ordered = sorted(schemas, key=lambda s: s.participant_id)
    ref, problems = ordered[0], []
    for s in ordered[1:]:
        if s.features != ref.features:
            problems.append(f"{s.where} has feature columns that differ from {ref.where}: "
                            f"{_diff('columns', s.features, ref.features)}; declare "
                            "dataset.numeric (or dataset.drop) so every site uses the same "
                            "columns")
        elif s.input_shape != ref.input_shape:
            problems.append(f"{s.where} has inputs of shape {s.input_shape}, {ref.where} of "
                            f"{ref.input_shape}; every site's examples must have one shape "
                            "(set dataset.image_size for images)")
        if s.classes != ref.classes:
            problems.append(f"{s.where} has classes {list(s.classes)}, {ref.where} has "
                            f"{list(ref.classes)}; declare dataset.classes so every site "
                            "numbers them alike")
    return problems
