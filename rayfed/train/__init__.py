"""Training: the shared loop, and Ray Train DDP with AMP around it.

``loop`` is the one training loop; ``ddp`` (the only module here that imports
Ray) runs it on a Ray Train worker group; ``precision``, ``private``, ``trace``
and ``workload`` are plain helpers. See docs/training.md.

The loop's names are imported on first use (PEP 562): the config layer imports
``rayfed.train.config``, and importing this package must not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["TrainStats", "evaluate", "make_optimizer", "tensor_batches", "train_epoch"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module("rayfed.train.loop"), name)
