"""Hydra's side of a typed config: register a schema, convert a composed config.

Each job has one root dataclass (``Config``, ``TrainJobConfig``,
``OffloadJobConfig``); these two functions are the same for all of them.
"""

from __future__ import annotations

from typing import Any, TypeVar

from rayfed.errors import ConfigError

T = TypeVar("T")


def register(name: str, node: type) -> None:
    """Store ``node`` as ``name`` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=node)


def to_typed(cfg: Any, cls: type[T], *, name: str, primary: str) -> T:
    """The composed ``DictConfig`` as an instance of ``cls``, or a ConfigError
    saying which defaults list lacks the schema ``name``."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, cls):
        raise ConfigError([f"the composed config is not a {cls.__name__}; add `- {name}` to "
                           f"the defaults list of {primary}"])
    return obj
