"""The ``model`` section of the config, its checks, and how a run builds its model.

Built-in models are names in the registry; a user's own ``nn.Module`` is
``model=custom model._target_=pkg.module.Class`` (Hydra's convention) with its
constructor arguments in ``model.kwargs``, or a class or factory handed to the
Python API. :func:`build` is the one place either is turned into a module, in
the driver and in every participant host alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rayfed.models.spec import MODEL_NAMES, ModelSpec

if TYPE_CHECKING:  # torch is imported where a model is built, not by the config layer
    from torch import nn

CUSTOM = "custom"


@dataclass
class ModelConfig:
    name: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    channels: list[int] = field(default_factory=lambda: [16, 32])
    # model=custom: the dotted import path of an nn.Module class or factory.
    _target_: str | None = None
    # model=custom: its keyword arguments (num_classes and input_shape are passed
    # too when it takes them).
    kwargs: dict[str, Any] = field(default_factory=dict)


def model_problems(m: ModelConfig) -> list[str]:
    p: list[str] = []
    if m.name == CUSTOM:
        if not m._target_:
            p.append("model=custom needs model._target_, the import path of your nn.Module "
                     "class or factory, e.g. model._target_=my_pkg.nets.MyNet")
    elif m.name not in MODEL_NAMES:
        p.append(f"model={m.name!r} is not one of {sorted([*MODEL_NAMES, CUSTOM])}; pick one of "
                 "those")
    else:
        p += [f"model.{key}={value!r} only takes effect with model=custom; add model=custom "
              "or drop it" for key, value in (("_target_", m._target_), ("kwargs", m.kwargs))
              if value]
    if not all(h > 0 for h in m.hidden_sizes):
        p.append(f"model.hidden_sizes={m.hidden_sizes} must be positive widths")
    if not (m.channels and all(c > 0 for c in m.channels)):
        p.append(f"model.channels={m.channels} must be a non-empty list of positive ints")
    return p


def is_custom(m: ModelConfig) -> bool:
    return m.name == CUSTOM


def spec_from_config(model: ModelConfig, *, input_shape: tuple[int, ...],
                     num_classes: int) -> ModelSpec:
    return ModelSpec(model.name, tuple(input_shape), num_classes,
                     tuple(model.hidden_sizes), tuple(model.channels))


def build(model: ModelConfig, *, input_shape: tuple[int, ...], num_classes: int,
          seed: int | None = None, factory: Callable[..., Any] | None = None) -> nn.Module:
    """The run's model: ``factory`` (Python API), ``model._target_``, or the registry."""
    from rayfed.models.registry import build_model

    if factory is not None or is_custom(model):
        from rayfed.models.custom import build_custom_model

        return build_custom_model(factory or model._target_ or "", model.kwargs,
                                  input_shape=input_shape, num_classes=num_classes, seed=seed)
    return build_model(spec_from_config(model, input_shape=input_shape,
                                        num_classes=num_classes), seed=seed)
