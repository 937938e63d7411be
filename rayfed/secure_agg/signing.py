"""Participant signatures on ciphertext labels (Ed25519, RFC 8032).

Each participant signs what its ciphertext claims to be: the run's key
fingerprint, the round, its id, its weight, its value count and a SHA-256 digest
of the ciphertext bytes. The participant's host makes the key pair from OS
entropy and registers the public half with the decryptor itself; the server
never holds a private half. The decryptor then opens only sums whose every
term verifies under the key registered for a distinct participant of the
round's selection, so the server can neither relabel a ciphertext (one
participant's update presented as another's, or as another round's) nor add
terms of its own.

The registry accepts one key per participant id and is sealed before the first
round: a key registered first by someone else makes the honest host's
registration fail loudly (an attack detected, not a silent one).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rayfed.errors import IntegrityError

# Domain separation: a signature over a label can never be reused for anything else.
LABEL_DOMAIN = "rayfed/secure-agg/label/v1"
PUBLIC_KEY_BYTES = 32


@dataclass(frozen=True)
class Label:
    """What one participant's ciphertext claims to be; the signed message."""

    fingerprint: str
    server_round: int
    participant_id: int
    weight: int
    size: int
    digest: str

    def message(self) -> bytes:
        """Canonical bytes: sorted-key JSON of plain ints and strings."""
        return json.dumps({"domain": LABEL_DOMAIN, **self.__dict__}, sort_keys=True,
                          separators=(",", ":")).encode()


def chunks_digest(chunks: Sequence[bytes]) -> str:
    """SHA-256 over the ciphertext chunks, each prefixed by its length (so that
    moving bytes between chunks changes the digest)."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "big"))
        h.update(chunk)
    return h.hexdigest()


class Registrar(Protocol):
    """Where a host registers its participants' public keys (the decryptor)."""

    def register(self, participant_id: int, public_key: bytes) -> None: ...


class ParticipantSigners:
    """The private halves a host holds for the participants it serves.

    ``repr`` never shows a key; nothing here serializes a private key.
    """

    def __init__(self) -> None:
        self._keys: dict[int, Ed25519PrivateKey] = {}

    def enrol(self, participant_ids: Iterable[int], registrar: Registrar) -> None:
        """Make a key pair per participant (OS entropy) and register its public half.

        Raises whatever the registrar raises: a participant id already registered
        means someone else claimed it first, which the host must not hide.
        """
        for pid in participant_ids:
            if pid in self._keys:
                continue
            key = Ed25519PrivateKey.generate()
            registrar.register(int(pid), public_bytes(key.public_key()))
            self._keys[int(pid)] = key

    def holds(self, participant_id: int) -> bool:
        return participant_id in self._keys

    def sign(self, label: Label) -> tuple[bytes, float]:
        """The label's signature and the seconds it took."""
        key = self._keys.get(label.participant_id)
        if key is None:
            raise IntegrityError(
                f"this host holds no signing key for participant {label.participant_id}: "
                "participants are enrolled once, before round 1 (a restarted host cannot "
                "re-enrol, docs/security.md), so its updates cannot be summed")
        t0 = time.perf_counter()
        signature = key.sign(label.message())
        return signature, time.perf_counter() - t0

    def __repr__(self) -> str:
        return f"ParticipantSigners({sorted(self._keys)})"


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def signature_problem(label: Label, signature: object,
                      public_keys: Mapping[int, bytes]) -> str | None:
    """Why ``signature`` does not authenticate ``label``, or None if it does."""
    raw = public_keys.get(label.participant_id)
    if raw is None:
        return f"participant {label.participant_id} has no registered signing key"
    if not isinstance(signature, bytes):
        return f"participant {label.participant_id}'s label carries no signature"
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, label.message())
    except InvalidSignature:
        return (f"the signature on participant {label.participant_id}'s label (round "
                f"{label.server_round}, weight {label.weight}) does not verify: the label "
                "or the ciphertext bytes were altered after the participant signed them")
    return None


class KeyRegistry:
    """participant id → Ed25519 public key: one key per id, sealed before round 1."""

    def __init__(self, num_clients: int) -> None:
        self.num_clients = num_clients
        self._keys: dict[int, bytes] = {}
        self.sealed = False

    def register(self, participant_id: int, public_key: bytes) -> None:
        if self.sealed:
            raise IntegrityError(
                f"participant {participant_id} tried to register after the key registry was "
                "sealed (round 1 has begun); a restarted participant host cannot re-enrol, "
                "so its updates are rejected until the next run")
        if not isinstance(participant_id, int) or not 0 <= participant_id < self.num_clients:
            raise IntegrityError(f"participant id {participant_id!r} is not one of this "
                                 f"run's fl.num_clients={self.num_clients} participants")
        if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
            raise IntegrityError(f"participant {participant_id}'s public key must be "
                                 f"{PUBLIC_KEY_BYTES} raw Ed25519 bytes")
        if participant_id in self._keys:
            raise IntegrityError(
                f"participant {participant_id} already has a registered key: someone else "
                "claimed this participant id before its host did. Treat the run as "
                "attacked (docs/security.md); its updates would be signed by another key")
        self._keys[participant_id] = public_key

    def seal(self) -> dict[int, bytes]:
        """Close registration; every participant must be enrolled by now."""
        missing = sorted(set(range(self.num_clients)) - set(self._keys))
        if missing:
            raise IntegrityError(f"participants {missing} never registered a signing key; "
                                 "every host enrols its participants before round 1")
        self.sealed = True
        return dict(self._keys)

    def public_keys(self) -> dict[int, bytes]:
        return dict(self._keys)
