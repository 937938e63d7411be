"""The tracking interface the round loop talks to."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # the config layer imports this module; torch is not its business
    from torch import nn

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]


class Tracker(Protocol):
    run_id: str | None

    def start(self, *, params: Mapping[str, Any], tags: Mapping[str, str],
              run_id: str | None = None) -> str | None: ...

    def log_metrics(self, metrics: Mapping[str, float], *, step: int,
                    durable: bool = False) -> None:
        """Log one step's metrics; ``durable``: return only once they, and everything
        logged before them, are stored (before a checkpoint says the step is done)."""
        ...

    def flush(self) -> None:
        """Return once everything logged so far is stored (logging may be asynchronous)."""
        ...

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None: ...

    def log_model(self, model: nn.Module, *, input_example: Any) -> None: ...

    def finish(self, status: RunStatus) -> None: ...


class NullTracker:
    """Tracks nothing (``tracking.enabled=false``)."""

    run_id: str | None = None

    def start(self, *, params: Mapping[str, Any], tags: Mapping[str, str],
              run_id: str | None = None) -> str | None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], *, step: int,
                    durable: bool = False) -> None:
        pass

    def flush(self) -> None:
        pass

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None:
        pass

    def log_model(self, model: nn.Module, *, input_example: Any) -> None:
        pass

    def finish(self, status: RunStatus) -> None:
        pass
