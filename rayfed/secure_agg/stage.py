"""The participant's encrypt stage (order 3, after clip, noise and compress).

The stage pre-scales the update by ``num_examples`` (see ``packing.py`` for why),
packs it into ``ckks_vector`` chunks of N/2 slots, encrypts the chunks under the
run's *public* key in a thread pool, labels them with the key fingerprint, the
round, the participant and the weight, and signs the labels and a digest of the
bytes with the participant's own Ed25519 key (``signing.py``). It has no
``decode``: the server never decrypts an individual update; the decryptor opens
the sum (``rayfed.secure_agg.session``).

Provisioning (the host contract): the host passes :class:`EncryptMaterials`
(public context + where to register keys) to :meth:`EncryptStage.provision` at
construction, then calls :meth:`EncryptStage.enrol` with the ids of the
participants it serves, once, before round 1.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rayfed.errors import SecureAggError
from rayfed.secure_agg.ciphertexts import EncryptedUpdate
from rayfed.secure_agg.config import SecureAggPlan
from rayfed.secure_agg.keys import KeyBundle, load_public_context
from rayfed.secure_agg.packing import encrypt_chunks, prescale, split
from rayfed.secure_agg.signing import ParticipantSigners, Registrar
from rayfed.stages import Stage, UpdateContext


@dataclass(frozen=True)
class EncryptMaterials:
    """What a participant host receives: nothing secret."""

    public: KeyBundle
    # The decryptor's registration endpoint (a Ray actor handle wrapped in
    # ``session.RemoteRegistrar`` on a cluster, the Decryptor itself in tests).
    registrar: Registrar


@runtime_checkable
class Enrolling(Protocol):
    """A stage that registers per-participant keys before round 1."""

    def enrol(self, participant_ids: Iterable[int]) -> None: ...


class EncryptStage:
    """CKKS encryption of a participant's pre-scaled update, signed by the participant."""

    name = "encrypt"
    order = 3

    def __init__(self, *, slots: int, threads: int = 1, unit_weights: bool = False) -> None:
        self.slots = slots
        self.threads = threads
        # User-level DP (DP-FedAvg) sums clipped updates with weight 1.
        self.unit_weights = unit_weights
        self._context: Any = None
        self._fingerprint = ""
        self._registrar: Registrar | None = None
        self._signers = ParticipantSigners()

    def provision(self, material: EncryptMaterials) -> None:
        """Receive the run's public context and the decryptor's registrar."""
        self._context = load_public_context(material.public)
        self._fingerprint = material.public.fingerprint
        self._registrar = material.registrar

    def enrol(self, participant_ids: Iterable[int]) -> None:
        """Make signing keys for these participants here and register their public
        halves with the decryptor; fails loudly if an id was already claimed."""
        if self._registrar is None:
            raise SecureAggError("the encrypt stage was not provisioned (secure_agg=ckks): "
                                 "the host must receive EncryptMaterials before enrolling")
        self._signers.enrol(participant_ids, self._registrar)

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
        weight = 1 if self.unit_weights else int(ctx.num_examples)
        t0 = time.perf_counter()
        chunks = encrypt_chunks(self._context, split(prescale(values, weight), self.slots),
                                threads=self.threads)
        encrypt_s = time.perf_counter() - t0
        unsigned = EncryptedUpdate(
            fingerprint=self._fingerprint, server_round=ctx.server_round,
            participant_id=ctx.participant_id, weight=weight, size=values.size,
            chunks=chunks, encrypt_seconds=encrypt_s)
        t1 = time.perf_counter()
        signature, _ = self._signers.sign(unsigned.label())
        return replace(unsigned, signature=signature, sign_seconds=time.perf_counter() - t1)


def secure_agg_stages(plan: SecureAggPlan | None) -> list[Stage]:
    """The pipeline factory: one encrypt stage when ``secure_agg=ckks``."""
    if plan is None:
        return []
    return [EncryptStage(slots=plan.slots, threads=plan.encrypt_threads,
                         unit_weights=plan.unit_weights)]
