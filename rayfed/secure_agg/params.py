"""CKKS parameters: presets and the 128-bit security bound they must respect.

CKKS (Cheon, Kim, Kim, Song 2017, "Homomorphic Encryption for Arithmetic of
Approximate Numbers") with Microsoft SEAL as TenSEAL runs it. For a ring of
degree N the coefficient modulus may have at most a certain number of bits before
the RLWE instance drops below 128-bit classical security; SEAL enforces the table
of the HomomorphicEncryption.org standard (Albrecht et al. 2018), which
:data:`MAX_COEFF_BITS_128` copies. We check it ourselves, before any key is
made, so that the message names the bound and the config key to change.

A ciphertext packs N/2 real values (slots). Secure aggregation only adds
ciphertexts, so no rescaling level is consumed; the middle primes only give the
fresh ciphertext headroom, and the scale 2^40 gives ~1e-8 absolute error per
value (measured in ``tests/unit/secure_agg``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

# poly_modulus_degree -> most coefficient-modulus bits at 128-bit security.
MAX_COEFF_BITS_128: Mapping[int, int] = MappingProxyType(
    {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881})
# SEAL's primes are at most 60 bits.
MAX_PRIME_BITS = 60


@dataclass(frozen=True)
class CKKSParams:
    """The three numbers that define a CKKS context."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    global_scale_bits: int

    @property
    def slots(self) -> int:
        """Real values per ciphertext: N/2."""
        return self.poly_modulus_degree // 2

    @property
    def total_coeff_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)


PRESETS: Mapping[str, CKKSParams] = MappingProxyType({
    # 218-bit bound; 200 bits used. ~330 KB per ciphertext of 4096 values.
    "n8192": CKKSParams(8192, (60, 40, 40, 60), 40),
    # More precision and 8192 values per ciphertext; 270 of 438 bits.
    "n16384": CKKSParams(16384, (60, 50, 50, 50, 60), 50),
})


def param_problems(*, poly_modulus_degree: int, coeff_mod_bit_sizes: Sequence[int],
                   global_scale_bits: int, key: str = "secure_agg") -> list[str]:
    """Every reason these parameters are insecure or unusable, naming the keys."""
    p: list[str] = []
    n, bits = poly_modulus_degree, list(coeff_mod_bit_sizes)
    bound = MAX_COEFF_BITS_128.get(n)
    if bound is None:
        p.append(f"{key}.poly_modulus_degree={n} is not one of {sorted(MAX_COEFF_BITS_128)}; "
                 "use 8192 (or 16384 for more precision)")
    if len(bits) < 2:
        p.append(f"{key}.coeff_mod_bit_sizes={bits} needs at least two primes (data and "
                 "special prime), e.g. [60, 40, 40, 60]")
    bad = [b for b in bits if not 1 <= b <= MAX_PRIME_BITS]
    if bad:
        p.append(f"{key}.coeff_mod_bit_sizes has primes of {bad} bits; each must be 1.."
                 f"{MAX_PRIME_BITS} bits")
    if bound is not None and sum(bits) > bound:
        p.append(f"{key}.coeff_mod_bit_sizes={bits} total {sum(bits)} bits, above SEAL's "
                 f"128-bit security bound of {bound} bits for poly_modulus_degree={n}; "
                 "use fewer or smaller primes, or a larger poly_modulus_degree")
    if bits and not 0 < global_scale_bits < bits[0]:
        p.append(f"{key}.global_scale_bits={global_scale_bits} must be between 1 and the "
                 f"first prime's {bits[0]} bits, leaving room for the integer part of the "
                 "summed values; 40 with [60, 40, 40, 60]")
    return p


def check_params(params: CKKSParams) -> None:
    """Raise ``ConfigError`` if ``params`` are insecure (defence in depth: the key
    authority calls this even when the config was validated)."""
    from rayfed.errors import ConfigError

    problems = param_problems(poly_modulus_degree=params.poly_modulus_degree,
                              coeff_mod_bit_sizes=params.coeff_mod_bit_sizes,
                              global_scale_bits=params.global_scale_bits)
    if problems:
        raise ConfigError(problems)
