"""rayfed: privacy-preserving federated learning and edge/cloud offloading on Ray.

``rayfed.run(...)`` is the Python API (:mod:`rayfed.api`); it is imported on first
use, so that ``import rayfed`` stays cheap (no torch, Ray or Hydra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayfed.api import RunResult, run

from rayfed.naming import register_resolver as _register_resolver

__version__ = "0.1.0"

# conf/config.yaml's default `name` interpolates ${rayfed.run_name:...}.
_register_resolver()

__all__ = ["RunResult", "__version__", "run"]


def __getattr__(name: str) -> Any:
    if name in ("run", "RunResult"):
        from rayfed import api

        return getattr(api, name)
    raise AttributeError(f"module 'rayfed' has no attribute {name!r}")
