"""DP-FedAvg's participant-side pipeline stages: clip (order 0), noise share (order 1).

McMahan et al. 2018. Clipping runs at every participant before any pooled
pre-aggregation, so a partial sum inside an actor is a sum of clipped updates
and the sensitivity argument holds. With ``privacy.noise_placement=clients``
each participant adds its share N(0, σ²C²/n) of the noise (n = expected
participants), so that the server, or secure aggregation in front of it, only
ever sees noised sums. Neither stage has a server-side inverse.
"""

from __future__ import annotations

import numpy as np

from rayfed.privacy.clipping import clip_update
from rayfed.privacy.noise import gaussian_noise, noise_generator
from rayfed.privacy.plan import PrivacyPlan
from rayfed.stages import Stage, UpdateContext


class ClipStage:
    name = "dp_clip"
    order = 0

    def __init__(self, *, clipping_norm: float) -> None:
        self.clipping_norm = clipping_norm

    def encode(self, update: np.ndarray, ctx: UpdateContext) -> np.ndarray:
        return clip_update(update, clipping_norm=self.clipping_norm)


class ClientNoiseStage:
    name = "dp_noise"
    order = 1

    def __init__(self, *, std: float, secure_rng: bool) -> None:
        self.std = std
        self.secure_rng = secure_rng

    def encode(self, update: np.ndarray, ctx: UpdateContext) -> np.ndarray:
        # Without secure_rng the share comes from the round's seed, which the server
        # knows: reproducible, but the server could subtract it (see docs/privacy.md).
        rng = noise_generator(secure=True) if self.secure_rng else ctx.rng
        noised = update.astype(np.float64) + gaussian_noise(update.shape, std=self.std, rng=rng)
        return noised.astype(update.dtype)


def privacy_stages(privacy: PrivacyPlan) -> list[Stage]:
    """The stages the plan asks for (none for ``none`` and ``local_dp``).

    The noise share is the plan's, never re-solved here: after a resume that
    re-planned σ, participants add exactly the noise the ledger charges.
    """
    plan = privacy.user
    if plan is None:
        return []
    stages: list[Stage] = [ClipStage(clipping_norm=plan.clipping_norm)]
    if plan.noise_placement == "clients":
        stages.append(ClientNoiseStage(std=plan.client_noise_std, secure_rng=plan.secure_rng))
    return stages
