"""What crosses the wire under secure aggregation, and the integrity checks on it.

An :class:`EncryptedUpdate` is one participant's ciphertexts with plaintext
labels (the fingerprint of the key it was made under, its round, its id, its
weight and value count) and the participant's Ed25519 signature over those
labels and a digest of the ciphertext bytes (``signing.py``). Labels are checked
before anything is summed, so a ciphertext from a foreign key, a stale round, a
weight other than the one screened, or a label someone altered is rejected by
name; the decryptor checks the same things again, because it does not trust the
server that forwards the terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rayfed.secure_agg.signing import Label, chunks_digest, signature_problem

# A weight is an example count (or 1 under DP-FedAvg); far above any shard.
MAX_WEIGHT = 2**31 - 1


@dataclass(frozen=True)
class EncryptedUpdate:
    """One participant's pre-scaled update n_i Δ_i as CKKS ciphertexts, signed."""

    fingerprint: str
    server_round: int
    participant_id: int
    # The weight n_i the values were pre-scaled by (num_examples, or 1 under central_dp).
    weight: int
    # Plaintext length: the number of model parameters.
    size: int
    chunks: tuple[bytes, ...]
    # Ed25519 signature of ``label()`` by the participant's own key.
    signature: bytes = b""
    encrypt_seconds: float = 0.0
    sign_seconds: float = 0.0

    @property
    def ciphertext_bytes(self) -> int:
        return sum(len(c) for c in self.chunks)

    def label(self) -> Label:
        """The signed message, with the digest recomputed from the bytes held."""
        return Label(fingerprint=self.fingerprint, server_round=self.server_round,
                     participant_id=self.participant_id, weight=self.weight, size=self.size,
                     digest=chunks_digest(self.chunks))

    def __repr__(self) -> str:
        return (f"EncryptedUpdate(participant_id={self.participant_id}, "
                f"server_round={self.server_round}, {len(self.chunks)} ciphertexts)")


def weight_problem(weight: object, *, participant_id: int,
                   expected: int | None = None) -> str | None:
    """Why ``weight`` is not a plausible (or not the screened) weight, or None."""
    if isinstance(weight, bool) or not isinstance(weight, int):
        shown = weight if not isinstance(weight, float) or math.isfinite(weight) else repr(weight)
        return (f"participant {participant_id}'s encrypted weight {shown!r} is not an "
                "integer example count")
    if not 0 < weight <= MAX_WEIGHT:
        return (f"participant {participant_id}'s encrypted weight {weight} is outside "
                f"1..{MAX_WEIGHT}")
    if expected is not None and weight != expected:
        return (f"participant {participant_id}'s encrypted weight {weight} differs from the "
                f"{expected} it must be (its screened num_examples, or 1 under "
                "privacy=central_dp); the weighted mean would be off by their ratio")
    return None


def label_problem(update: EncryptedUpdate, *, fingerprint: str, server_round: int,
                  size: int, num_chunks: int) -> str | None:
    """Why ``update``'s labels rule it out of this round's sum, or None."""
    if update.fingerprint != fingerprint:
        return (f"ciphertext from participant {update.participant_id} was made under a "
                f"foreign key (fingerprint {update.fingerprint}, this run's is "
                f"{fingerprint}); it would decrypt to garbage, so it is rejected")
    if update.server_round != server_round:
        return (f"ciphertext from participant {update.participant_id} is labelled round "
                f"{update.server_round}, but this is round {server_round}; a stale or "
                "replayed ciphertext is rejected")
    if update.size != size or len(update.chunks) != num_chunks:
        return (f"ciphertext from participant {update.participant_id} packs {update.size} "
                f"values in {len(update.chunks)} chunks; the model needs {size} in "
                f"{num_chunks}")
    return weight_problem(update.weight, participant_id=update.participant_id)


def authenticity_problem(update: EncryptedUpdate,
                         public_keys: Mapping[int, bytes]) -> str | None:
    """Why ``update`` is not signed by its participant's registered key, or None."""
    return signature_problem(update.label(), update.signature, public_keys)
