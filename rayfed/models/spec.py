"""What every process needs to build the same model: a frozen spec."""

from __future__ import annotations

from dataclasses import dataclass

# The built-in models' names, for the config's checks without importing torch
# (the registry builds them; a unit test keeps the two in step).
MODEL_NAMES = ("logreg", "mlp", "cnn", "cnn1d", "resnet_gn")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build the same model in any process."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    hidden_sizes: tuple[int, ...] = (128,)
    channels: tuple[int, ...] = (16, 32)
