"""Model registry and the flat-vector view of a model's weights."""

from rayfed.models.config import ModelConfig, spec_from_config
from rayfed.models.params import get_flat, num_params, set_flat
from rayfed.models.registry import MODELS, build_model
from rayfed.models.spec import ModelSpec

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
