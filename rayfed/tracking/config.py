"""The ``tracking`` section of the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rayfed.tracking.base import Tracker


@dataclass
class TrackingConfig:
    enabled: bool = True
    # null: MLFLOW_TRACKING_URI, else an embedded sqlite file in the working dir.
    uri: str | None = None
    experiment: str = "rayfed"
    log_model: bool = True


def make_tracker(tc: TrackingConfig, *, run_name: str, parent_run_id: str | None = None,
                 choices: Mapping[str, str] | None = None) -> Tracker:
    """The job's tracker: MLflow when ``tracking.enabled``, else one that does nothing."""
    if not tc.enabled:
        from rayfed.tracking.base import NullTracker

        return NullTracker()
    from rayfed.tracking.mlflow import MlflowTracker

    return MlflowTracker(uri=tc.uri, experiment=tc.experiment, run_name=run_name,
                         parent_run_id=parent_run_id, choices=choices)
