"""The participant's encrypt stage (order 3, after clip, noise and compress).

The stage pre-scales the update by ``num_examples`` (see ``packing.py`` for why),
packs it into ``ckks_vector`` chunks of N/2 slots, encrypts the chunks in a
thread pool and labels them with the key fingerprint and the round. It has no
``decode``: the server never decrypts an individual update; it sums the
ciphertexts and the decryptor opens the sum (``rayfed.secure_agg.session``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from rayfed.errors import SecureAggError
from rayfed.secure_agg.ciphertexts import EncryptedUpdate
from rayfed.secure_agg.config import SecureAggPlan
from rayfed.secure_agg.keys import KeyBundle, load_secret_context
from rayfed.secure_agg.packing import encrypt_chunks, prescale, split
from rayfed.stages import Stage, UpdateContext


class EncryptStage:
    """CKKS encryption of a participant's pre-scaled update."""

    name = "encrypt"
    order = 3

    def __init__(self, *, slots: int, threads: int = 1, unit_weights: bool = False) -> None:
        self.slots = slots
        self.threads = threads
        # User-level DP (DP-FedAvg) sums clipped updates with weight 1.
        self.unit_weights = unit_weights
        self._context: Any = None
        self._fingerprint = ""

    def provision(self, material: KeyBundle) -> None:
        """Receive the run's secret context from the key authority."""
        self._context = load_secret_context(material)
        self._fingerprint = material.fingerprint

    def encode(self, update: np.ndarray, ctx: UpdateContext) -> EncryptedUpdate:
        if self._context is None:
            raise SecureAggError("the encrypt stage has no key; the participant host must be "
                                 "provisioned by the key authority (secure_agg=ckks) before "
                                 "it trains")
        values = np.asarray(update)
        # The server cannot see inside a ciphertext, so a non-finite update is
        # refused here, where it can still be a single participant's failure.
        if not np.isfinite(values).all():
            raise SecureAggError("update has non-finite values; refusing to encrypt it")
        weight = 1 if self.unit_weights else ctx.num_examples
        t0 = time.perf_counter()
        chunks = encrypt_chunks(self._context, split(prescale(values, weight), self.slots),
                                threads=self.threads)
        return EncryptedUpdate(
            fingerprint=self._fingerprint, server_round=ctx.server_round,
            participant_id=ctx.participant_id, weight=weight, size=values.size,
            chunks=chunks, encrypt_seconds=time.perf_counter() - t0)


def secure_agg_stages(plan: SecureAggPlan | None) -> list[Stage]:
    """The pipeline factory: one encrypt stage when ``secure_agg=ckks``."""
    if plan is None:
        return []
    return [EncryptStage(slots=plan.slots, threads=plan.encrypt_threads,
                         unit_weights=plan.unit_weights)]
