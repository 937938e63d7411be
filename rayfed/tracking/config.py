"""The ``tracking`` section of the config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrackingConfig:
    enabled: bool = True
    # null: MLFLOW_TRACKING_URI, else an embedded sqlite file in the working dir.
    uri: str | None = None
    experiment: str = "rayfed"
    log_model: bool = True
