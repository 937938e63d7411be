"""The ``model`` section of the config, its checks, and the spec it resolves to."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayfed.models.registry import MODELS
from rayfed.models.spec import ModelSpec


@dataclass
class ModelConfig:
    name: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    channels: list[int] = field(default_factory=lambda: [16, 32])


def model_problems(m: ModelConfig) -> list[str]:
    p: list[str] = []
    if m.name not in MODELS:
        p.append(f"model={m.name!r} is not one of {sorted(MODELS)}; pick one of those")
    if not all(h > 0 for h in m.hidden_sizes):
        p.append(f"model.hidden_sizes={m.hidden_sizes} must be positive widths")
    if not (m.channels and all(c > 0 for c in m.channels)):
        p.append(f"model.channels={m.channels} must be a non-empty list of positive ints")
    return p


def spec_from_config(model: ModelConfig, *, input_shape: tuple[int, ...],
                     num_classes: int) -> ModelSpec:
    return ModelSpec(model.name, tuple(input_shape), num_classes,
                     tuple(model.hidden_sizes), tuple(model.channels))
