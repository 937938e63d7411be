"""What every process needs to build the same model: a frozen spec."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build the same model in any process."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    hidden_sizes: tuple[int, ...] = (128,)
    channels: tuple[int, ...] = (16, 32)
