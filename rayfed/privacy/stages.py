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

from rayfed.config import Config
from rayfed.pipeline import Stage, UpdateContext
from rayfed.privacy.clipping import clip_update
from rayfed.privacy.noise import client_noise_std, gaussian_noise, noise_generator
from rayfed.privacy.settings import user_level_plan


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


def privacy_stages(cfg: Config) -> list[Stage]:
    """The stages ``privacy.*`` asks for (none for ``none`` and ``local_dp``)."""
    if cfg.privacy.name != "central_dp":
        return []
    plan = user_level_plan(cfg)
    stages: list[Stage] = [ClipStage(clipping_norm=plan.clipping_norm)]
    if plan.noise_placement == "clients":
        std = client_noise_std(noise_multiplier=plan.noise_multiplier,
                               clipping_norm=plan.clipping_norm,
                               expected_clients=plan.expected_clients)
        stages.append(ClientNoiseStage(std=std, secure_rng=plan.secure_rng))
    return stages
