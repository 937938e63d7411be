"""MLflow tracking: an embedded sqlite store by default, a server when configured.

Per-round metrics are logged asynchronously (MLflow's ``synchronous=False``) so
that a slow store never stretches a round, except a round about to be
checkpointed, whose metrics are stored first (``durable``); :meth:`MlflowTracker.flush`
waits for the queue before the run's final status is set.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from rayfed.tracking.base import RunStatus
from rayfed.tracking.store import seed_store

# MLflow 3 sends usage telemetry by default; a privacy product's runs should not
# phone home unless the user asks (MLFLOW_DISABLE_TELEMETRY=false turns it on).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v)
    return out


def hydra_choices() -> dict[str, str]:
    """The config group choices of the running Hydra job (``{"strategy": "fedprox"}``),
    empty outside one. A choice is a file name (``secure_agg=ckks16384``), which the
    typed config does not hold; a sweep over a group is tabulated by it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {str(k): str(v) for k, v in choices.items()
            if v is not None and not str(k).startswith("hydra") and k != "base_config"}


def _owning_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every tensor owns its storage.

    ``rayfed.models.params.set_flat`` loads weights with ``vector_to_parameters``,
    which leaves each parameter a view into one flat vector; torch's export archive,
    which MLflow 3 writes, then finds no tensor covering that shared storage and
    warns "No complete tensor found in the group" on every run."""
    import copy

    import torch

    clone = copy.deepcopy(model)
    with torch.no_grad():
        for t in (*clone.parameters(), *clone.buffers()):
            t.data = t.data.clone()
    return clone


class MlflowTracker:
    def __init__(self, *, uri: str | None, experiment: str, run_name: str | None = None,
                 parent_run_id: str | None = None,
                 choices: Mapping[str, str] | None = None) -> None:
        self.uri = uri or default_tracking_uri()
        self._experiment = experiment
        self._run_name = run_name
        # A sweep's trial: MLflow nests runs by this tag (rayfed.tracking.sweep).
        self._parent_run_id = parent_run_id
        # Logged as params named by the group (`strategy` = fedprox) next to the
        # typed config's `strategy.name` etc.
        self._choices = dict(choices or {})
        self.run_id: str | None = None
        # Whether metrics were logged asynchronously since the last flush.
        self._queued = False

    # MLflow is imported, and its store opened, on first use (the run's start):
    # the federated job creates its actors first, so that their start-up overlaps
    # these seconds of imports and store set-up (issue #18).
    @cached_property
    def _mlflow(self) -> Any:
        import mlflow

        return mlflow

    @cached_property
    def _client(self) -> Any:
        seed_store(self.uri)  # a new sqlite store: a copy, not fifty migrations
        return self._mlflow.MlflowClient(tracking_uri=self.uri)

    def start(self, *, params: Mapping[str, Any], tags: Mapping[str, str],
              run_id: str | None = None) -> str | None:
        from mlflow.entities import Param, RunTag

        if run_id is not None:
            # Resume continues the same MLflow run.
            self._client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        exp = self._client.get_experiment_by_name(self._experiment)
        exp_id = exp.experiment_id if exp else self._client.create_experiment(self._experiment)
        commit = git_commit()
        all_tags = {"git_commit": commit, "mlflow.source.git.commit": commit, **tags}
        if self._parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = self._parent_run_id
        run = self._client.create_run(exp_id, run_name=self._run_name, tags=all_tags)
        self.run_id = run.info.run_id
        flat = [Param(k, v[:6000]) for k, v in {**flatten(params), **self._choices}.items()]
        for i in range(0, len(flat), 100):
            self._client.log_batch(self.run_id, params=flat[i : i + 100])
        self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in all_tags.items()])
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, float], *, step: int,
                    durable: bool = False) -> None:
        """Asynchronously, unless ``durable``: then synchronously, after flushing
        what is still queued. One synchronous batch costs ~4 ms; MLflow's flush
        stops and restarts its logging thread, ~100 ms (measured, issue #18), so a
        run checkpointing every round flushes only when something is queued."""
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()
                 if v is not None and np.isfinite(v)]
        if not durable:
            self._client.log_batch(self.run_id, metrics=batch, synchronous=False)
            self._queued = True
            return
        if self._queued:
            self.flush()
        self._client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None:
        if self.run_id is not None:
            self._client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def log_model(self, model: nn.Module, *, input_example: Any) -> None:
        import torch
        from mlflow.models import infer_signature

        if self.run_id is None:
            return
        model = _owning_copy(model)
        with torch.no_grad():
            output = model(torch.as_tensor(input_example)).numpy()
        signature = infer_signature(np.asarray(input_example), output)
        # Model logging exists only in MLflow's fluent API, which reads the global
        # tracking URI; point it at this tracker's store for the duration.
        previous = self._mlflow.get_tracking_uri()
        self._mlflow.set_tracking_uri(self.uri)
        try:
            self._log_model(model, signature, input_example)
        finally:
            # None restores "unset" (MLflow accepts it; its annotation says str).
            self._mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]

    def _log_model(self, model: nn.Module, signature: Any, input_example: Any) -> None:
        import torch

        with self._mlflow.start_run(run_id=self.run_id):
            # Explicit requirements: MLflow's inference imports the model in a
            # subprocess, which costs seconds and can pick up unrelated packages.
            self._mlflow.pytorch.log_model(
                model, name="model", signature=signature, input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])

    def flush(self) -> None:
        """Wait for this tracker's asynchronously logged metrics to reach the store."""
        if self.run_id is None:
            return
        # flush_async_logging() flushes the global (fluent) store: point it at this
        # tracker's store, whose queue holds our metrics. Left unset, MLflow 3 would
        # open (and create) ./mlflow.db in the working dir, which two concurrent
        # `ray job submit` jobs sharing one unpacked working dir race to create.
        was_set = self._mlflow.is_tracking_uri_set()
        previous = self._mlflow.get_tracking_uri() if was_set else None
        self._mlflow.set_tracking_uri(self.uri)
        try:
            self._mlflow.flush_async_logging()
            self._queued = False
        finally:
            # None restores "unset" (MLflow accepts it; its annotation says str).
            self._mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]

    def finish(self, status: RunStatus) -> None:
        if self.run_id is None:
            return
        self.flush()
        self._client.set_terminated(self.run_id, status=status)
