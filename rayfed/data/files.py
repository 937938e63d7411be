"""Each site reads its own file: the ``dataset=files`` data source.

Cross-silo federated learning as in NVIDIA FLARE or Flower's ``ClientApp``:
participant *i* opens ``train_path.format(participant_id=i)`` inside its own
actor, on its own node; the driver never opens a site's file and no site opens
another's. Every function here reads only the path it is given, and nothing is
cached between calls, so a process holds no other site's data by construction.

Per site: :func:`describe_site` (the schema report the driver gathers before
round 1; names and shapes only), :func:`load_site` (the same ``ClientData`` a
synthetic split gives, with a deterministic validation split). At the server:
:func:`load_test` for the optional held-out ``test_path``.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import torch

from rayfed.data.datasets import ArrayDataset
from rayfed.data.federated import ClientData
from rayfed.data.images import read_image_folder, read_npz
from rayfed.data.partition import train_val_split
from rayfed.data.schema import (
    FileSource,
    SiteSchema,
    resolve_format,
    site_label,
    site_path,
    source_problems,
)
from rayfed.data.tabular import encode_frame, feature_names, read_frame
from rayfed.errors import DataError

# (x, y, feature_names, classes, problems) of one file or folder.
_Read = tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...], list[str]]


def _read(src: FileSource, path: str, *, where: str, key: str) -> _Read:
    """``(x, y, feature_names, classes, problems)`` for one file or folder."""
    empty = (np.zeros((0, 0), np.float32), np.zeros(0, np.int64), (), ())
    if not os.path.exists(path):
        return (*empty, [f"{where}: {key} gives {path!r}, which does not exist on node "
                         f"{socket.gethostname()}; put the site's file there (each site's "
                         "file is read on the node its participant runs on)"])
    fmt = resolve_format(path, src.format)
    if fmt is None:
        return (*empty, [f"{where}: cannot tell the format of {path!r} from its name; set "
                         "dataset.format to csv, parquet, npz or image_folder"])
    if fmt == "image_folder":
        if not os.path.isdir(path):
            return (*empty, [f"{where}: dataset.format=image_folder needs a folder of "
                             "class_name/ sub-folders, but the path is a file"])
        x, y, classes, problems = read_image_folder(path, src, where=where)
        return x, y, (), classes, problems
    labels = tuple(src.classes) or tuple(str(i) for i in range(src.num_classes or 0))
    if fmt == "npz":
        x, y, problems = read_npz(path, src, where=where)
        return x, y, (), labels, problems
    try:
        frame = read_frame(path, fmt, src)
    except Exception as exc:  # pandas and pyarrow raise many kinds for a malformed file
        return (*empty, [f"{where}: cannot read it as {fmt} ({type(exc).__name__}: {exc})"])
    x, y, problems = encode_frame(frame, src, where=where)
    return x, y, feature_names([str(c) for c in frame.columns], src), labels, problems


def _read_site(src: FileSource, participant_id: int) -> tuple[str, _Read]:
    """``(path, read)`` for this site; a bad declaration is reported, not read."""
    problems = source_problems(src)
    if problems:
        return src.train_path, (np.zeros((0, 0), np.float32), np.zeros(0, np.int64), (), (),
                                problems)
    path = site_path(src.train_path, participant_id)
    return path, _read(src, path, where=site_label(participant_id, path),
                       key=f"dataset.train_path={src.train_path!r}")


def describe_site(src: FileSource, participant_id: int) -> SiteSchema:
    """Read this site's file and report its schema and every problem found.

    Runs inside the participant's actor; only names, shapes and counts leave it.
    The driver passes all sites' reports to ``site_mismatches``.
    """
    path, (x, y, features, classes, problems) = _read_site(src, participant_id)
    return SiteSchema(participant_id=participant_id, path=path, features=features,
                      input_shape=tuple(x.shape[1:]), classes=classes,
                      num_examples=len(y), problems=tuple(problems))


def schema_problems(src: FileSource, participant_id: int) -> list[str]:
    """The problems of this site's file alone (see :func:`describe_site`)."""
    return list(describe_site(src, participant_id).problems)


def _dataset(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], src: FileSource,
             problems: list[str]) -> ArrayDataset:
    if problems:
        raise DataError("; ".join(problems))
    return ArrayDataset(x=np.ascontiguousarray(x, dtype=np.float32), y=y.astype(np.int64),
                        num_classes=src.num_labels or len(classes))


def read_site(src: FileSource, participant_id: int) -> ArrayDataset:
    """This site's whole file as one data set; :class:`DataError` lists every problem."""
    _, (x, y, _, classes, problems) = _read_site(src, participant_id)
    return _dataset(x, y, classes, src, problems)


def load_site(src: FileSource, participant_id: int, *, val_fraction: float,
              seed: int) -> ClientData:
    """This site's ``ClientData``: train and validation tensors, float32 and int64.

    The split is a seeded permutation, drawn with the same generator key as the
    synthetic ``FederatedData.client`` split, so a run is reproducible per seed.
    """
    ds = read_site(src, participant_id)
    rng = np.random.default_rng([seed, 0x5A11, participant_id])
    train_idx, val_idx = train_val_split(np.arange(len(ds)), val_fraction=val_fraction, rng=rng)

    def part(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.ascontiguousarray(ds.x[idx])), torch.from_numpy(ds.y[idx])

    x_tr, y_tr = part(train_idx)
    x_va, y_va = part(val_idx)
    return ClientData(participant_id, x_tr, y_tr, x_va, y_va)


def load_test(src: FileSource) -> ArrayDataset | None:
    """The server's held-out ``dataset.test_path``, or ``None`` when it is not set."""
    if src.test_path is None:
        return None
    problems = source_problems(src)
    if not problems:
        x, y, _, classes, problems = _read(src, src.test_path, key="dataset.test_path",
                                           where=f"the test set ({src.test_path})")
        return _dataset(x, y, classes, src, problems)
    raise DataError("; ".join(problems))
