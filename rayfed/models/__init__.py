"""Model registry and the flat-vector view of a model's weights."""

from rayfed.models.params import get_flat, num_params, set_flat
from rayfed.models.registry import MODELS, ModelSpec, build_model, spec_from_config

__all__ = [
    "MODELS",
    "ModelSpec",
    "build_model",
    "get_flat",
    "num_params",
    "set_flat",
    "spec_from_config",
]
