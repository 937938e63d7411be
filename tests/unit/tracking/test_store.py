"""rayfed.tracking.store: a new sqlite store copied from an empty migrated one is
the store MLflow would have made (issue #18). Real MLflow, no Ray."""

from __future__ import annotations

import sqlite3
import time

import mlflow
import pytest

from rayfed.tracking.store import empty_store, seed_store, sqlite_file


def _experiments(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage "
                          "FROM experiments ORDER BY experiment_id").fetchall()


def _schema(path):
    """Every table and index with its columns and constraints, and the Alembic
    version. Constraints compare as a set: MLflow's own migrations write a
    table's constraints in varying order (two stores it migrated in one process
    differ there), which sqlite ignores."""
    with sqlite3.connect(path) as db:
        tables = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
    parts = {(kind, name, table,
              frozenset(line.strip().rstrip(",") for line in (sql or "").splitlines()))
             for kind, name, table, sql in tables}
    return parts, version


def _use(uri: str) -> str:
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("rayfed")
    run = client.create_run(exp, run_name="r")
    client.log_metric(run.info.run_id, "accuracy", 0.5, step=1)
    return run.info.run_id


def test_a_seeded_store_is_the_store_mlflow_makes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")  # MLflow's default artifact root is ./mlruns
    fresh = tmp_path / "a" / "mlflow.db"
    _use(f"sqlite:///{fresh}")
    monkeypatch.chdir(tmp_path / "b")
    seeded = tmp_path / "b" / "mlflow.db"
    assert seed_store(f"sqlite:///{seeded}", cache=cache) is True
    run_id = _use(f"sqlite:///{seeded}")
    assert _schema(seeded) == _schema(fresh)
    # Same experiments, ids and lifecycle; each default experiment points at its own
    # directory's artifact root, not the template's.
    rel = [(i, n, loc.replace(str(tmp_path / "b"), str(tmp_path / "a")), s)
           for i, n, loc, s in _experiments(seeded)]
    assert rel == _experiments(fresh)
    assert _experiments(seeded)[0][2] == str(tmp_path / "b" / "mlruns" / "0")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{seeded}")
    (m,) = client.get_metric_history(run_id, "accuracy")
    assert (m.value, m.step) == (0.5, 1)


def test_an_existing_store_is_never_replaced(tmp_path):
    cache = tmp_path / "cache"
    db = tmp_path / "mlflow.db"
    run_id = _use(f"sqlite:///{db}")
    before = db.read_bytes()
    assert seed_store(f"sqlite:///{db}", cache=cache) is False
    assert db.read_bytes() == before
    assert mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(run_id)


@pytest.mark.parametrize("uri", ["http://localhost:5000", "file:///tmp/mlruns", "sqlite:///",
                                 "sqlite:///x.db?mode=ro", "databricks"])
def test_other_stores_are_left_to_mlflow(uri, tmp_path):
    assert sqlite_file(uri) is None
    assert seed_store(uri, cache=tmp_path) is False


def test_the_copy_is_faster_than_migrating(tmp_path):
    """Best of three each (a pause of the machine is not the store's time)."""
    cache = tmp_path / "cache"
    empty_store(cache)
    migrate, seeded = [], []
    for i in range(3):
        t0 = time.perf_counter()
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / f'fresh{i}.db'}"
                            ).search_experiments()
        migrate.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        seed_store(f"sqlite:///{tmp_path / f'seeded{i}.db'}", cache=cache)
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / f'seeded{i}.db'}"
                            ).search_experiments()
        seeded.append(time.perf_counter() - t0)
    print(f"migrate {min(migrate):.3f} s, seeded {min(seeded):.3f} s")
    assert min(seeded) < min(migrate) / 3, (seeded, migrate)
