"""L2 clipping of a participant's update, the sensitivity bound of DP-FedAvg.

McMahan et al. 2018, "Learning Differentially Private Recurrent Language
Models": each update Δ is scaled to Δ · min(1, C / ‖Δ‖₂), so that one user
changes the sum by at most C. A NaN or Inf update has no norm: it is rejected,
never clipped through (scaling NaN by anything is still NaN, and an Inf norm
would scale the update to zeros and hide a broken participant).
"""

from __future__ import annotations

import numpy as np

from rayfed.errors import RayfedError


class NonFiniteUpdateError(RayfedError, ValueError):
    """An update with NaN or Inf entries reached the clipping stage."""


def l2_norm(update: np.ndarray) -> float:
    # float64 accumulation: a float32 sum of squares loses the last digits that
    # the ‖clip(Δ)‖ ≤ C guarantee is checked to.
    return float(np.linalg.norm(update.astype(np.float64, copy=False).ravel()))


def clip_update(update: np.ndarray, *, clipping_norm: float) -> np.ndarray:
    """``update`` scaled to L2 norm ≤ ``clipping_norm``; raises on non-finite input."""
    if not np.isfinite(update).all():
        raise NonFiniteUpdateError("update has NaN or Inf entries; rejected before clipping "
                                   "(check the local learning rate fl.lr)")
    norm = l2_norm(update)
    if norm <= clipping_norm:
        return update
    # The factor is computed in float64 and nudged down one ulp of float32 so that
    # rounding the scaled float32 vector cannot land just above C.
    scale = clipping_norm / norm * (1.0 - 1e-6)
    return (update.astype(np.float64) * scale).astype(update.dtype)
