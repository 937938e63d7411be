"""Experiment tracking: the :class:`Tracker` protocol and its MLflow implementation."""

from rayfed.tracking.base import NullTracker, RunStatus, Tracker

__all__ = ["NullTracker", "RunStatus", "Tracker"]
