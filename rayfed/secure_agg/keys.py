"""Keys and contexts: a key authority per run; who receives which key.

Roles (see ``docs/security.md``):

* the **key authority** makes a fresh CKKS context for each run (TenSEAL over
  Microsoft SEAL) inside the decryptor's own process, and exports only
  :meth:`KeyAuthority.public_bundle`;
* **participants** and the **aggregator** receive only the public context: the
  public key, with no secret key, no Galois keys and no relinearization keys.
  CKKS encryption needs the public key alone, and a sum needs none of the
  others. :func:`load_public_context` refuses anything more;
* the **decryptor** (``rayfed.secure_agg.roles.Decryptor``) is the only holder
  of the secret context and decrypts only signed, attributable sums.

Every ciphertext is labelled with the run's *fingerprint*: a SHA-256 of the
serialized public context (the public key and the parameters), so that a
ciphertext made under another key is recognised instead of silently
decrypting to garbage, which is what TenSEAL does on its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import tenseal as ts

from rayfed.errors import SecureAggError
from rayfed.secure_agg.params import CKKSParams, check_params


def context_fingerprint(public_context: bytes) -> str:
    """The fingerprint of a run's keys: SHA-256 of its serialized public context."""
    return hashlib.sha256(public_context).hexdigest()[:32]


def _public_bytes(context: ts.Context) -> bytes:
    return context.serialize(save_public_key=True, save_secret_key=False,
                             save_galois_keys=False, save_relin_keys=False)


@dataclass(frozen=True)
class KeyBundle:
    """Serialized context plus the fingerprint of the key it belongs to.

    ``repr`` leaves the key bytes out so that a bundle never lands in a log.
    """

    context: bytes
    fingerprint: str

    def __repr__(self) -> str:
        return f"KeyBundle(fingerprint={self.fingerprint!r}, {len(self.context)} bytes)"


class KeyAuthority:
    """Creates one run's CKKS keys and hands out the right part to each role."""

    def __init__(self, params: CKKSParams) -> None:
        check_params(params)
        context = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                             coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        context.global_scale = 2.0 ** params.global_scale_bits
        self.params = params
        self._context = context
        self._public = _public_bytes(context)
        self.fingerprint = context_fingerprint(self._public)

    def public_bundle(self) -> KeyBundle:
        """For the aggregator: the public key only."""
        return KeyBundle(self._public, self.fingerprint)

    def secret_bundle(self) -> KeyBundle:
        """For the decryptor alone, in the process that made the key: secret and
        public key, nothing else. No actor method returns it."""
        blob = self._context.serialize(save_public_key=True, save_secret_key=True,
                                       save_galois_keys=False, save_relin_keys=False)
        return KeyBundle(blob, self.fingerprint)


def load_public_context(bundle: KeyBundle) -> ts.Context:
    """The aggregator's or a participant's context; refuses one that could decrypt
    or rotate."""
    context = ts.context_from(bundle.context)
    if context.is_private():
        raise SecureAggError(
            "the aggregator or a participant was given a context holding the secret key; "
            "it must get KeyAuthority.public_bundle(), never secret_bundle(), or it could "
            "decrypt individual updates")
    if context.has_galois_keys() or context.has_relin_keys():
        raise SecureAggError(
            "the public context holds Galois or relinearization keys; encryption and a "
            "sum need neither, so the key authority must not send them")
    _check_fingerprint(context, bundle.fingerprint)
    return context


def load_secret_context(bundle: KeyBundle) -> ts.Context:
    """The decryptor's context, checked against its fingerprint."""
    context = ts.context_from(bundle.context)
    if not context.is_private():
        raise SecureAggError("the decryptor needs the secret context "
                             "(KeyAuthority.secret_bundle()), but got a public one")
    _check_fingerprint(context, bundle.fingerprint)
    return context


def _check_fingerprint(context: ts.Context, fingerprint: str) -> None:
    mine = context_fingerprint(_public_bytes(context))
    if mine != fingerprint:
        raise SecureAggError(f"context fingerprint {mine} does not match the bundle's "
                             f"{fingerprint}: the key bytes were altered or mixed up")
