"""Model registry and the flat-vector view of a model's weights.

The names are imported on first use (PEP 562): the config layer imports
``rayfed.models.config``, and importing this package must not import torch
(about a second that a job would otherwise pay before it has read its config).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "MODELS": "rayfed.models.registry",
    "ModelConfig": "rayfed.models.config",
    "ModelSpec": "rayfed.models.spec",
    "build_model": "rayfed.models.registry",
    "get_flat": "rayfed.models.params",
    "num_params": "rayfed.models.params",
    "set_flat": "rayfed.models.params",
    "spec_from_config": "rayfed.models.config",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
