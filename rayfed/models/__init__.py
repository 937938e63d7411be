"""Model registry and the flat-vector view of a model's weights."""

from rayfed.models.config import ModelConfig, spec_from_config
from rayfed.models.params import get_flat, num_params, set_flat
from rayfed.models.registry import MODELS, ModelSpec, build_model

__all__ = [
    "MODELS",
    "ModelConfig",
    "ModelSpec",
    "build_model",
    "get_flat",
    "num_params",
    "set_flat",
    "spec_from_config",
]
