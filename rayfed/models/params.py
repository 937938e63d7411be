"""Model weights as one flat float32 vector: the unit that crosses the wire.

Strategies, codecs and encryption all work on this vector; only these two
functions know how it maps onto a module's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def get_flat(model: nn.Module, params: Sequence[nn.Parameter] | None = None) -> np.ndarray:
    """A copy of the model's parameters as a flat float32 vector.

    ``params`` is ``list(model.parameters())`` cached by a caller that calls this
    in a hot loop: walking the module tree costs more than copying a small model.
    """
    with torch.no_grad():
        vec = torch.nn.utils.parameters_to_vector(params or model.parameters())
    # parameters_to_vector already made a new tensor; no second copy.
    return vec.detach().cpu().numpy().astype(np.float32, copy=False)


def set_flat(
    model: nn.Module, flat: np.ndarray, params: Sequence[nn.Parameter] | None = None
) -> None:
    """Load a flat vector produced by :func:`get_flat` into ``model`` in place."""
    params = params or list(model.parameters())
    n = sum(p.numel() for p in params)
    if flat.shape != (n,):
        raise ValueError(f"weight vector has shape {flat.shape}, model expects ({n},)")
    with torch.no_grad():
        # The broadcast array is a read-only view of the object store; copy it once.
        # On the parameters' device (a participant on CUDA), or vector_to_parameters
        # would move them back to the CPU.
        vec = torch.tensor(flat, dtype=torch.float32, device=params[0].device if params else None)
        torch.nn.utils.vector_to_parameters(vec, params)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
