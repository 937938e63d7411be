"""The aggregator and the decryptor: the two server-side roles, without Ray.

The **aggregator** holds only the public context. It screens each received
payload: labels (key fingerprint, round, size), the weight against the
participant's screened ``num_examples``, every chunk parsed as one fresh
ciphertext of the run's ring and scale, and the participant's Ed25519 signature
(``signing.py``). Whatever fails is that participant's rejection, never an
exception in the round loop. It cannot decrypt anything.

The **decryptor** holds the secret key and opens at most one sum per round, and
only a sum it computed itself from terms it can attribute: every term must carry
a valid signature by the key registered for a distinct participant of the round's
announced selection, for this round, under this run's key, and there must be at
least ``min_participants`` of them. Round ids are strictly increasing and at most
the run's planned ``fl.rounds``, so a server gets at most ``fl.rounds`` openings
per key. Nothing the server sends is trusted: the decryptor re-checks the labels,
the signatures and the ciphertexts, and sums them itself, so a substituted sum or
a relabelled or duplicated ciphertext is refused by name.

Before releasing a sum the decryptor adds Gaussian noise of ``noise_std`` to it
(noise flooding, Li, Micciancio, Schultz & Sorrell 2022, "Securing Approximate
Homomorphic Encryption Using Differential Privacy"): CKKS decryptions carry an
error that depends on the secret key, and Li & Micciancio 2021 recover the key
from decryptions of known plaintexts (IND-CPA^D). See ``docs/security.md``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rayfed.errors import IntegrityError, SecureAggError
from rayfed.secure_agg.ciphertexts import (
    EncryptedUpdate,
    authenticity_problem,
    label_problem,
    weight_problem,
)
from rayfed.secure_agg.keys import KeyBundle, load_public_context, load_secret_context
from rayfed.secure_agg.packing import (
    CiphertextShape,
    chunk_lengths,
    decrypt_vectors,
    parse_chunk,
    sum_parsed,
)
from rayfed.secure_agg.params import CKKSParams
from rayfed.secure_agg.signing import KeyRegistry


def _parse_all(context: Any, update: EncryptedUpdate, *, lengths: Sequence[int],
               shape: CiphertextShape) -> list[Any]:
    """Every chunk of ``update`` parsed, or ``ValueError`` naming the bad one."""
    out = []
    for j, (blob, values) in enumerate(zip(update.chunks, lengths, strict=True)):
        try:
            out.append(parse_chunk(context, blob, values=values, shape=shape))
        except ValueError as exc:
            raise ValueError(f"chunk {j}: {exc}") from exc
    return out


class Aggregator:
    """Screens participants' ciphertexts under the public key (it never decrypts)."""

    def __init__(self, bundle: KeyBundle, *, size: int, params: CKKSParams) -> None:
        self._context = load_public_context(bundle)
        self.fingerprint = bundle.fingerprint
        self.size = size
        self.shape = CiphertextShape.of(params)
        self.lengths = chunk_lengths(size, params.slots)
        self.num_chunks = len(self.lengths)
        # Participants' registered public keys, set once the registry is sealed.
        self.public_keys: Mapping[int, bytes] = {}

    @property
    def holds_secret_key(self) -> bool:
        return bool(self._context.is_private())

    def screen(self, update: object, *, server_round: int,
               expected_weight: int | None = None) -> str | None:
        """Why a received payload may not enter this round's sum, or None.

        ``expected_weight``: the participant's screened ``num_examples`` (or 1
        under DP-FedAvg); the encrypted weight label must equal it.
        """
        if not isinstance(update, EncryptedUpdate):
            return (f"expected an EncryptedUpdate under secure aggregation, got "
                    f"{type(update).__name__}; plaintext updates are refused")
        problem = label_problem(update, fingerprint=self.fingerprint,
                                server_round=server_round, size=self.size,
                                num_chunks=self.num_chunks)
        if problem is None and expected_weight is not None:
            problem = weight_problem(update.weight, participant_id=update.participant_id,
                                     expected=expected_weight)
        if problem is not None:
            return problem
        try:
            _parse_all(self._context, update, lengths=self.lengths, shape=self.shape)
        except ValueError as exc:
            return f"participant {update.participant_id}'s ciphertext is malformed: {exc}"
        return authenticity_problem(update, self.public_keys)


class Decryptor:
    """Opens one signed, attributable sum per round, and nothing else."""

    def __init__(self, bundle: KeyBundle, *, params: CKKSParams, size: int,
                 min_participants: int, max_rounds: int, num_clients: int,
                 noise_std: float, rng: np.random.Generator) -> None:
        if min_participants < 2:
            raise SecureAggError(f"secure_agg.min_participants={min_participants} would let "
                                 "the decryptor open a single participant's update; use >= 2")
        if not np.isfinite(noise_std) or noise_std < 0:
            raise SecureAggError(f"secure_agg.decrypt_noise_std={noise_std} must be a finite "
                                 "number >= 0")
        self._context = load_secret_context(bundle)
        self.fingerprint = bundle.fingerprint
        self.shape = CiphertextShape.of(params)
        self.size = size
        self.lengths = chunk_lengths(size, params.slots)
        self.min_participants = min_participants
        self.max_rounds = max_rounds
        self.noise_std = noise_std
        self.registry = KeyRegistry(num_clients)
        self._rng = rng
        self._round = 0
        self._selected: frozenset[int] = frozenset()
        self._opened = True

    def register(self, participant_id: int, public_key: bytes) -> None:
        """A participant host registers one of its participants' public keys."""
        self.registry.register(participant_id, public_key)

    def seal(self) -> dict[int, bytes]:
        """Close registration (before round 1); return the public keys."""
        return self.registry.seal()

    def begin_round(self, server_round: int, selected: Sequence[int]) -> None:
        """Commit to a round and its selection; rounds only move forward, up to the plan."""
        if not self.registry.sealed:
            raise IntegrityError("the participants' key registry is not sealed; it is sealed "
                                 "once every host has enrolled, before round 1")
        if not isinstance(server_round, int) or server_round <= self._round:
            raise IntegrityError(f"round {server_round} is not after round {self._round}; "
                                 "rounds are announced once, in increasing order")
        if server_round > self.max_rounds:
            raise IntegrityError(f"round {server_round} is beyond the run's planned "
                                 f"fl.rounds={self.max_rounds}; the decryptor opens at most "
                                 "that many sums per key")
        chosen = frozenset(selected)
        unknown = sorted(chosen - set(self.registry.public_keys()))
        if unknown or len(chosen) != len(list(selected)):
            raise IntegrityError(f"selection {list(selected)} of round {server_round} repeats "
                                 f"ids or names unregistered participants {unknown}")
        if len(chosen) < self.min_participants:
            raise IntegrityError(f"round {server_round} selects {len(chosen)} participant(s), "
                                 f"below secure_agg.min_participants={self.min_participants}")
        self._round, self._selected, self._opened = server_round, chosen, False

    def _term_problem(self, term: object, server_round: int,
                      keys: Mapping[int, bytes]) -> str | None:
        if not isinstance(term, EncryptedUpdate):
            return f"a term of type {type(term).__name__} is not a participant's ciphertext"
        if term.participant_id not in self._selected:
            return f"participant {term.participant_id} was not selected in round {server_round}"
        return (label_problem(term, fingerprint=self.fingerprint, server_round=server_round,
                              size=self.size, num_chunks=len(self.lengths))
                or authenticity_problem(term, keys))

    def decrypt_aggregate(self, server_round: int, participant_ids: Sequence[int],
                          terms: Sequence[EncryptedUpdate]
                          ) -> tuple[np.ndarray, int, dict[str, float]]:
        """(Σ w_i Δ_i + flooding noise, Σ w_i, seconds by step) of the current round.

        The sum is computed here from ``terms``, each verified; the request is
        refused with an :class:`IntegrityError` naming every problem otherwise.
        """
        if server_round != self._round:
            raise IntegrityError(f"asked to decrypt round {server_round}, but the current "
                                 f"round is {self._round}; stale rounds are never decrypted")
        if self._opened:
            raise IntegrityError(f"round {server_round}'s aggregate was already decrypted; "
                                 "each round is opened once")
        t0 = time.perf_counter()
        keys = self.registry.public_keys()
        problems = [p for t in terms if (p := self._term_problem(t, server_round, keys))]
        ids = [t.participant_id for t in terms if isinstance(t, EncryptedUpdate)]
        if len(set(ids)) != len(ids):
            problems.append(f"terms {sorted(ids)} include duplicates; each participant "
                            "contributes once")
        if sorted(participant_ids) != sorted(ids):
            problems.append(f"participant set {sorted(participant_ids)} differs from the "
                            f"terms' {sorted(ids)}")
        if len(set(ids)) < self.min_participants:
            problems.append(f"the aggregate of round {server_round} sums {len(set(ids))} "
                            f"distinct participant(s), below secure_agg.min_participants="
                            f"{self.min_participants}; decrypting it would reveal individual "
                            "updates")
        if problems:
            raise IntegrityError("refusing to decrypt: " + "; ".join(problems))
        verify_s = time.perf_counter() - t0
        parsed = []
        for t in terms:
            try:
                parsed.append(_parse_all(self._context, t, lengths=self.lengths,
                                         shape=self.shape))
            except ValueError as exc:
                raise IntegrityError(f"refusing to decrypt: participant {t.participant_id}'s "
                                     f"ciphertext is malformed: {exc}") from exc
        self._opened = True
        t1 = time.perf_counter()
        total = sum_parsed(parsed)
        t2 = time.perf_counter()
        values = decrypt_vectors(total, self.size)
        t3 = time.perf_counter()
        if self.noise_std > 0:
            values = values + self._rng.normal(0.0, self.noise_std, values.shape)
        timings = {"verify": verify_s, "parse": t1 - t0 - verify_s, "sum": t2 - t1,
                   "decrypt": t3 - t2}
        return values, sum(t.weight for t in terms), timings
