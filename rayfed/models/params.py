"""Model weights as one flat float32 vector: the unit that crosses the wire.

Strategies, codecs and encryption all work on this vector; only these two
functions know how it maps onto a module's parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def get_flat(model: nn.Module) -> np.ndarray:
    """A copy of the model's parameters as a flat float32 vector."""
    with torch.no_grad():
        vec = torch.nn.utils.parameters_to_vector(model.parameters())
    return vec.detach().cpu().numpy().astype(np.float32, copy=True)


def set_flat(model: nn.Module, flat: np.ndarray) -> None:
    """Load a flat vector produced by :func:`get_flat` into ``model`` in place."""
    n = sum(p.numel() for p in model.parameters())
    if flat.shape != (n,):
        raise ValueError(f"weight vector has shape {flat.shape}, model expects ({n},)")
    with torch.no_grad():
        # The broadcast array is a read-only view of the object store; copy it once.
        vec = torch.tensor(flat, dtype=torch.float32)
        torch.nn.utils.vector_to_parameters(vec, model.parameters())


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
