"""What crosses the wire under secure aggregation, and the integrity checks on it.

An :class:`EncryptedUpdate` is one participant's ciphertexts with plaintext
labels: the fingerprint of the key it was made under and its round. Labels are
checked before anything is summed, so a ciphertext from a foreign key or a stale
round is rejected by name (TenSEAL would decrypt either to garbage or, worse, to
last round's numbers). The labels are not authenticated; ``docs/security.md``
says what that leaves to a malicious server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rayfed.errors import IntegrityError


@dataclass(frozen=True)
class EncryptedUpdate:
    """One participant's pre-scaled update n_i Δ_i as CKKS ciphertexts."""

    fingerprint: str
    server_round: int
    participant_id: int
    # The weight n_i the values were pre-scaled by (the participant's num_examples).
    weight: int
    # Plaintext length: the number of model parameters.
    size: int
    chunks: tuple[bytes, ...]
    encrypt_seconds: float = 0.0

    @property
    def ciphertext_bytes(self) -> int:
        return sum(len(c) for c in self.chunks)

    def __repr__(self) -> str:
        return (f"EncryptedUpdate(participant_id={self.participant_id}, "
                f"server_round={self.server_round}, {len(self.chunks)} ciphertexts)")


@dataclass(frozen=True)
class EncryptedAggregate:
    """The committed sum of one round: what the decryptor is asked to open."""

    fingerprint: str
    server_round: int
    participant_ids: tuple[int, ...]
    total_weight: int
    size: int
    chunks: tuple[bytes, ...]

    def __repr__(self) -> str:
        return (f"EncryptedAggregate(server_round={self.server_round}, "
                f"participants={list(self.participant_ids)}, {len(self.chunks)} ciphertexts)")


def integrity_problem(update: EncryptedUpdate, *, fingerprint: str, server_round: int,
                      size: int, num_chunks: int) -> str | None:
    """Why ``update`` must not enter this round's sum, or None if it may."""
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
    if update.weight <= 0:
        return f"participant {update.participant_id} reports weight {update.weight} <= 0"
    return None


def check_integrity(updates: Sequence[EncryptedUpdate], *, fingerprint: str,
                    server_round: int, size: int, num_chunks: int) -> None:
    """Raise :class:`IntegrityError` naming every update that fails a check."""
    problems = [p for u in updates
                if (p := integrity_problem(u, fingerprint=fingerprint, server_round=server_round,
                                           size=size, num_chunks=num_chunks))]
    ids = [u.participant_id for u in updates]
    if len(set(ids)) != len(ids):
        problems.append(f"participants {sorted(ids)} include duplicates; each contributes once")
    if problems:
        raise IntegrityError("; ".join(problems))
