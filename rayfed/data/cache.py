"""An on-disk cache of prepared splits, so that each process need not rebuild them.

Every actor of a run builds the same train pool before it cuts out its
participants' shards, and the driver builds the same test split. Building means
importing scikit-learn (with SciPy and pandas behind it: about a second per
process) or generating MNIST-1D. The first process writes the arrays; the others
read them back in milliseconds. Entries are ``.npz`` files read with
``allow_pickle=False``, written to a temporary file and renamed, so concurrent
writers and killed processes never leave a half-written entry. A cache that
cannot be written (read-only home, full disk) is skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Bump when the preparation of a cached data set changes.
FORMAT = 1

Splits = tuple[Any, Any]


def cache_dir() -> Path:
    """``$RAYFED_CACHE_DIR``, else ``$XDG_CACHE_HOME/rayfed``, else ``~/.cache/rayfed``."""
    if os.environ.get("RAYFED_CACHE_DIR"):
        return Path(os.environ["RAYFED_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rayfed"


def _key(params: dict[str, Any], packages: tuple[str, ...]) -> str:
    versions: dict[str, str | None] = {}
    for p in packages:
        try:
            versions[p] = version(p)
        except PackageNotFoundError:
            versions[p] = None
    blob = json.dumps({"format": FORMAT, **params, "versions": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cached_splits(
    params: dict[str, Any],
    build: Callable[[], tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]],
    *,
    packages: tuple[str, ...] = (),
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((x_pool, y_pool), (x_test, y_test))`` for ``params``, built at most once.

    ``params`` names everything the arrays depend on; the versions of
    ``packages`` join the key, so an upgrade that changes a split is a miss.
    """
    if os.environ.get("RAYFED_CACHE_DIR", None) == "":
        return build()
    path = cache_dir() / "datasets" / f"{params.get('name', 'data')}-{_key(params, packages)}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            return (f["x_pool"], f["y_pool"]), (f["x_test"], f["y_test"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError) as exc:  # a damaged entry: rebuild it
        log.warning("ignoring damaged cache entry %s: %s", path, exc)
    (x_pool, y_pool), (x_test, y_test) = built = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, x_pool=x_pool, y_pool=y_pool, x_test=x_test, y_test=y_test)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        log.debug("data cache not written (%s); building in each process", exc)
    return built
