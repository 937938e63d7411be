"""The aggregator and the decryptor: the two server-side roles, without Ray.

The aggregator holds only the public context and adds ciphertexts; it cannot
decrypt anything. The decryptor holds the secret context and opens exactly one
thing per round: the committed sum of that round's surviving participants,
announced at selection time (:meth:`Decryptor.begin_round`) and identified by
round id and participant set. It never opens a round twice, an older round, a
set outside the round's selection, or a set smaller than ``min_participants``
(which would be one participant's update).

Before releasing a sum the decryptor adds Gaussian noise of ``noise_std`` to it
(noise flooding, Li, Micciancio, Schultz & Sorrell 2022, "Securing Approximate
Homomorphic Encryption Using Differential Privacy"): CKKS decryptions carry an
error that depends on the secret key, and Li & Micciancio 2021 recover the key
from decryptions of known plaintexts (IND-CPA^D). See ``docs/security.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from rayfed.errors import IntegrityError, SecureAggError
from rayfed.secure_agg.ciphertexts import (
    EncryptedAggregate,
    EncryptedUpdate,
    check_integrity,
    integrity_problem,
)
from rayfed.secure_agg.keys import KeyBundle, load_public_context, load_secret_context
from rayfed.secure_agg.packing import decrypt_chunks, num_chunks, sum_ciphertexts


class Aggregator:
    """Sums participants' ciphertexts under the public key."""

    def __init__(self, bundle: KeyBundle, *, size: int, slots: int) -> None:
        self._context = load_public_context(bundle)
        self.fingerprint = bundle.fingerprint
        self.size = size
        self.num_chunks = num_chunks(size, slots)

    @property
    def holds_secret_key(self) -> bool:
        return bool(self._context.is_private())

    def screen(self, update: object, *, server_round: int) -> str | None:
        """Why a received payload may not enter this round's sum, or None."""
        if not isinstance(update, EncryptedUpdate):
            return (f"expected an EncryptedUpdate under secure aggregation, got "
                    f"{type(update).__name__}; plaintext updates are refused")
        return integrity_problem(update, fingerprint=self.fingerprint,
                                 server_round=server_round, size=self.size,
                                 num_chunks=self.num_chunks)

    def aggregate(self, updates: Sequence[EncryptedUpdate], *,
                  server_round: int) -> EncryptedAggregate:
        """The round's committed sum Σ n_i Δ_i, still encrypted."""
        check_integrity(updates, fingerprint=self.fingerprint, server_round=server_round,
                        size=self.size, num_chunks=self.num_chunks)
        ordered = sorted(updates, key=lambda u: u.participant_id)
        chunks = sum_ciphertexts(self._context, [u.chunks for u in ordered])
        return EncryptedAggregate(
            fingerprint=self.fingerprint, server_round=server_round,
            participant_ids=tuple(u.participant_id for u in ordered),
            total_weight=sum(u.weight for u in ordered), size=self.size, chunks=chunks)


class Decryptor:
    """Decrypts one committed aggregate per round, and nothing else."""

    def __init__(self, bundle: KeyBundle, *, min_participants: int, noise_std: float,
                 rng: np.random.Generator) -> None:
        if min_participants < 2:
            raise SecureAggError(f"secure_agg.min_participants={min_participants} would let "
                                 "the decryptor open a single participant's update; use >= 2")
        self._context = load_secret_context(bundle)
        self.fingerprint = bundle.fingerprint
        self.min_participants = min_participants
        self.noise_std = noise_std
        self._rng = rng
        self._round = 0
        self._selected: frozenset[int] = frozenset()
        self._opened = True

    def begin_round(self, server_round: int, selected: Sequence[int]) -> None:
        """Announce a round and whom it selected; rounds only move forward."""
        if server_round <= self._round:
            raise IntegrityError(f"round {server_round} is not after round {self._round}; "
                                 "rounds are announced once, in increasing order")
        self._round, self._selected, self._opened = server_round, frozenset(selected), False

    def decrypt_aggregate(self, server_round: int, participant_ids: Sequence[int],
                          aggregate: EncryptedAggregate) -> tuple[np.ndarray, float]:
        """Σ n_i Δ_i (+ flooding noise) of the current round, and seconds decrypting."""
        ids = tuple(sorted(participant_ids))
        if aggregate.fingerprint != self.fingerprint:
            raise IntegrityError(f"aggregate was made under a foreign key (fingerprint "
                                 f"{aggregate.fingerprint}, the decryptor's is "
                                 f"{self.fingerprint}); refusing to decrypt")
        if server_round != self._round or aggregate.server_round != server_round:
            raise IntegrityError(f"asked to decrypt round {server_round} (aggregate labelled "
                                 f"{aggregate.server_round}), but the current round is "
                                 f"{self._round}; stale rounds are never decrypted")
        if self._opened:
            raise IntegrityError(f"round {server_round}'s aggregate was already decrypted; "
                                 "each round is opened once")
        if ids != aggregate.participant_ids:
            raise IntegrityError(f"participant set {list(ids)} differs from the aggregate's "
                                 f"{list(aggregate.participant_ids)}")
        if not set(ids) <= self._selected:
            raise IntegrityError(f"participants {sorted(set(ids) - self._selected)} were not "
                                 f"selected in round {server_round}")
        if len(ids) < self.min_participants:
            raise SecureAggError(f"the aggregate of round {server_round} sums {len(ids)} "
                                 f"participant(s), below secure_agg.min_participants="
                                 f"{self.min_participants}; decrypting it would reveal "
                                 "individual updates")
        self._opened = True
        t0 = time.perf_counter()
        values = decrypt_chunks(self._context, aggregate.chunks, aggregate.size)
        seconds = time.perf_counter() - t0
        if self.noise_std > 0:
            values = values + self._rng.normal(0.0, self.noise_std, values.shape)
        return values, seconds
