"""A new embedded MLflow store starts as a copy of an empty, migrated one.

MLflow creates a new sqlite store by building its first tables and then running
every Alembic migration since (about fifty), which takes ~1.1 s on a quiet core
and more under load (measured for issue #18): on the README's first run, and on
every run in a new directory, that was the single largest cost of tracking. The
schema depends only on the MLflow version, so rayfed migrates one empty store per
version (``~/.cache/rayfed/mlflow-<version>-empty.db``, with MLflow's own code),
removes its default experiment, and copies it where a new store is wanted.
Opening the copy, MLflow verifies the schema is at its head and creates the
default experiment itself, with this store's artifact root and the current time,
exactly as for a store it migrated. Anything unexpected (another scheme, a
cache that cannot be written) leaves the store to MLflow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (``sqlite:////abs`` is absolute)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix or "?" in uri:
        return None
    return Path(uri[len(prefix):])


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rayfed"


def seed_store(uri: str, *, cache: Path | None = None) -> bool:
    """Create the sqlite store of ``uri`` from the empty template if it does not
    exist yet; whether it did. Never replaces an existing file."""
    path = sqlite_file(uri)
    if path is None or path.exists():
        return False
    try:
        template = empty_store(cache or cache_dir())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, tmp)
        try:
            os.link(tmp, path)  # fails if another run created the store meanwhile
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:
        return False  # MLflow creates it the slow way
    return True


def empty_store(cache: Path) -> Path:
    """This MLflow version's empty, migrated store, made once per cache."""
    import mlflow

    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    if template.exists():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{template.name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp.resolve()}")
    client.search_experiments()  # MLflow creates and migrates the store
    # The default experiment records its store's artifact root and creation time:
    # each copy gets its own from MLflow when first opened.
    with contextlib.closing(sqlite3.connect(tmp)) as db, db:
        db.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
        db.execute("DELETE FROM experiments WHERE experiment_id = 0")
    os.replace(tmp, template)
    return template
