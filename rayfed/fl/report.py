"""What a run reports: per-round metrics for the tracker, and the run's summary.

Pure functions over :class:`~rayfed.types.RoundResult` values, so the round loop
only calls them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rayfed.types import RoundResult


def round_metrics(r: RoundResult, *extra: Mapping[str, float]) -> dict[str, float]:
    """The tracker's metrics of one round (plus privacy's and secure aggregation's)."""
    metrics: dict[str, float] = {
        "participants_reported": r.num_reported, "participants_failed": r.num_failed,
        "late_rejected": r.num_late_rejected, "updates_rejected": r.num_rejected,
        "round_seconds": r.seconds,
        "bytes_up": r.bytes_up, "bytes_up_accepted": r.bytes_up_accepted,
        "bytes_down": r.bytes_down,
        "round_aborted": float(r.status == "aborted"),
    }
    for name, value in (("train_loss", r.train_loss), ("loss", r.test_loss),
                        ("accuracy", r.test_accuracy),
                        ("federated_accuracy", r.federated_accuracy)):
        if value is not None:
            metrics[name] = value
    for more in extra:
        metrics.update(more)
    return metrics


def run_summary(history: Sequence[RoundResult], *, status: str, wall_seconds: float,
                setup_seconds: float, time_to_first_round_s: float | None) -> dict[str, Any]:
    """The summary of a run's rounds (``summary.json``'s core)."""
    completed = [r for r in history if r.status == "completed"]
    evals = [r for r in history if r.test_accuracy is not None]
    seconds = [r.seconds for r in history]
    return {
        "status": status,
        "final_accuracy": evals[-1].test_accuracy if evals else None,
        "final_loss": evals[-1].test_loss if evals else None,
        "rounds_completed": len(completed),
        "rounds_aborted": len(history) - len(completed),
        "wall_seconds": wall_seconds,
        "setup_seconds": setup_seconds,
        "time_to_first_round_s": time_to_first_round_s,
        "mean_round_seconds": float(np.mean(seconds)) if seconds else None,
        "median_round_seconds": float(np.median(seconds[1:] or seconds)) if seconds else None,
        "bytes_uploaded": sum(r.bytes_up for r in history),
        "bytes_uploaded_accepted": sum(r.bytes_up_accepted for r in history),
        "bytes_downloaded": sum(r.bytes_down for r in history),
    }
