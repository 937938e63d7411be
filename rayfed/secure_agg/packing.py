"""CKKS packing of model updates: flatten, chunk into N/2 slots, encrypt, sum, decrypt.

Batched CKKS encoding (Cheon et al. 2017) puts N/2 real values into the slots of
one ciphertext, so an update of P parameters costs ⌈P / (N/2)⌉ ciphertexts of
``ckks_vector`` (never ``ckks_tensor``, which spends one ciphertext per value).

Weighting. FedAvg needs Σ n_i Δ_i / Σ n_i. Participants *pre-scale* by their
``num_examples`` before encrypting and the server divides the decrypted sum by
the public total of the survivors. CKKS's error is absolute (≈ the encoding
noise over the scale), so encrypting n_i Δ_i and dividing by Σ n_i shrinks the
error of the mean by that total: measured 2e-11 max abs error for 10 parties at
scale 2^40, against 3e-8 when the server multiplies each ciphertext by the
plaintext scalar n_i / Σ n_i (which also costs a rescale per ciphertext).

Parsing. Bytes from a participant are untrusted: :func:`parse_chunk` turns them
into a ciphertext only if it is one fresh CKKS ciphertext of this run's ring
degree, modulus chain and scale with the expected number of values, so that a
malformed one is refused where it can still be that participant's failure
(SEAL would otherwise raise "scale mismatch" or "ciphertext data is invalid" in
the middle of the sum).

Everything here is a function of its arguments; the contexts are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tenseal as ts

from rayfed.secure_agg.params import CKKSParams


def num_chunks(size: int, slots: int) -> int:
    """Ciphertexts needed for ``size`` values at ``slots`` values each."""
    return max(1, math.ceil(size / slots))


def split(values: np.ndarray, slots: int) -> list[np.ndarray]:
    """Flatten ``values`` and cut it into pieces of at most ``slots`` values."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    return [flat[i : i + slots] for i in range(0, max(flat.size, 1), slots)]


def join(chunks: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Inverse of :func:`split`: the flat vector of ``size`` values."""
    flat = np.concatenate([np.asarray(c, dtype=np.float64) for c in chunks])
    if flat.size != size:
        raise ValueError(f"chunks hold {flat.size} values, expected {size}")
    return flat


def prescale(update: np.ndarray, num_examples: int) -> np.ndarray:
    """n_i Δ_i in float64, the participant's share of the weighted sum."""
    return np.float64(num_examples) * np.asarray(update, dtype=np.float64).ravel()


def encrypt_chunks(context: ts.Context, chunks: Sequence[np.ndarray], *,
                   threads: int = 1) -> tuple[bytes, ...]:
    """Encrypt each chunk as one ``ckks_vector`` and serialize it.

    With ``threads > 1`` chunks are encrypted concurrently: SEAL's encryption
    runs in C++ and TenSEAL releases the GIL around it.
    """
    def one(chunk: np.ndarray) -> bytes:
        return ts.ckks_vector(context, chunk.tolist()).serialize()

    if threads <= 1 or len(chunks) == 1:
        return tuple(one(c) for c in chunks)
    with ThreadPoolExecutor(max_workers=min(threads, len(chunks))) as pool:
        return tuple(pool.map(one, chunks))


@dataclass(frozen=True)
class CiphertextShape:
    """What every fresh ciphertext of a run looks like."""

    poly_modulus_degree: int
    # Primes at the fresh level: the chain minus the special prime.
    num_primes: int
    scale: float
    slots: int

    @classmethod
    def of(cls, params: CKKSParams) -> CiphertextShape:
        return cls(params.poly_modulus_degree, len(params.coeff_mod_bit_sizes) - 1,
                   2.0 ** params.global_scale_bits, params.slots)

    @property
    def max_bytes(self) -> int:
        """Two polynomials of N coefficients per prime, 8 bytes each, plus headers."""
        return 2 * self.poly_modulus_degree * self.num_primes * 8 + 4096


def chunk_lengths(size: int, slots: int) -> list[int]:
    """Values in each chunk of :func:`split` for an update of ``size`` values."""
    return [min(slots, size - i) for i in range(0, max(size, 1), slots)]


def parse_chunk(context: ts.Context, blob: object, *, values: int,
                shape: CiphertextShape) -> ts.CKKSVector:
    """One serialized ``ckks_vector``, or ``ValueError`` saying why it is not one."""
    if not isinstance(blob, bytes):
        raise ValueError(f"a ciphertext chunk is {type(blob).__name__}, not bytes")
    if not 0 < len(blob) <= shape.max_bytes:
        raise ValueError(f"a ciphertext chunk of {len(blob)} bytes is outside "
                         f"1..{shape.max_bytes} bytes")
    try:
        vector = ts.ckks_vector_from(context, blob)
        parts = vector.ciphertext()
    except Exception as exc:  # SEAL raises ValueError or RuntimeError on bad bytes
        raise ValueError(f"unparseable ciphertext ({exc})") from exc
    if vector.size() != values or len(parts) != 1:
        raise ValueError(f"ciphertext holds {vector.size()} values in {len(parts)} "
                         f"ciphertext(s); expected {values} in one")
    c = parts[0]
    if c.poly_modulus_degree() != shape.poly_modulus_degree:
        raise ValueError(f"ciphertext ring degree {c.poly_modulus_degree()} is not "
                         f"{shape.poly_modulus_degree}")
    if (c.size() != 2 or c.coeff_modulus_size() != shape.num_primes or not c.is_ntt_form()
            or c.is_transparent()):
        raise ValueError(f"ciphertext is not a fresh encryption (size {c.size()}, "
                         f"{c.coeff_modulus_size()} primes; expected 2 and {shape.num_primes})")
    if c.scale != shape.scale:
        raise ValueError(f"ciphertext scale 2^{math.log2(c.scale):.1f} is not the run's "
                         f"2^{math.log2(shape.scale):.0f}")
    return vector


def sum_ciphertexts(context: ts.Context,
                    contributions: Sequence[Sequence[bytes]]) -> tuple[bytes, ...]:
    """Chunk-wise homomorphic sum of several parties' ciphertexts (public key only)."""
    if not contributions:
        raise ValueError("no ciphertexts to sum")
    widths = {len(c) for c in contributions}
    if len(widths) != 1:
        raise ValueError(f"contributions have different numbers of chunks: {sorted(widths)}")
    out = []
    for j in range(widths.pop()):
        acc = ts.ckks_vector_from(context, contributions[0][j])
        for c in contributions[1:]:
            acc += ts.ckks_vector_from(context, c[j])
        out.append(acc.serialize())
    return tuple(out)


def sum_parsed(vectors: Sequence[Sequence[ts.CKKSVector]]) -> list[ts.CKKSVector]:
    """Chunk-wise sum of parsed ciphertexts (each term a list of chunks).

    Accumulates in place into the first term's vectors, which the caller parsed
    for this sum alone (TenSEAL's ``copy`` costs ~7 ms a ciphertext, 30x an add).
    """
    if not vectors:
        raise ValueError("no ciphertexts to sum")
    out = list(vectors[0])
    for term in vectors[1:]:
        for acc, v in zip(out, term, strict=True):
            acc.add_(v)
    return out


def decrypt_vectors(vectors: Sequence[ts.CKKSVector], size: int) -> np.ndarray:
    """Decrypt parsed vectors (their context must hold the secret key) and join them."""
    return join([np.asarray(v.decrypt()) for v in vectors], size)


def decrypt_chunks(context: ts.Context, chunks: Sequence[bytes], size: int) -> np.ndarray:
    """Decrypt serialized vectors (``context`` must hold the secret key) and join them."""
    return join([np.asarray(ts.ckks_vector_from(context, c).decrypt()) for c in chunks], size)
