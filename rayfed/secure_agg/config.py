"""The ``secure_agg`` section of the config, its checks and its plan."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rayfed.secure_agg.params import CKKSParams, param_problems

SECURE_AGG_MODES = ("none", "ckks")


@dataclass
class SecureAggConfig:
    """Secure aggregation with CKKS (``conf/secure_agg/``); logic in
    ``rayfed.secure_agg``. The aggregator only ever holds the public key."""

    name: str = "none"
    # CKKS parameters; checked against SEAL's 128-bit bound (rayfed.secure_agg.params).
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: list[int] = field(default_factory=lambda: [60, 40, 40, 60])
    global_scale_bits: int = 40
    # Threads each participant encrypts its chunks with.
    encrypt_threads: int = 2
    # The decryptor never opens a sum of fewer participants than this.
    min_participants: int = 2
    # Noise flooding of each decrypted sum against IND-CPA^D key recovery
    # (docs/security.md); in units of Σ n_i Δ_i, so the mean sees it / Σ n_i.
    decrypt_noise_std: float = 1.0e-6
    # Ray resources for the key authority / decryptor actor, e.g. {keyholder: 1}.
    decryptor_resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SecureAggPlan:
    """What every role of a CKKS run is built from."""

    params: CKKSParams
    encrypt_threads: int
    min_participants: int
    decrypt_noise_std: float
    decryptor_resources: tuple[tuple[str, float], ...]
    # DP-FedAvg sums clipped updates with weight 1, so each ciphertext's weight is 1.
    unit_weights: bool
    # The decryptor opens at most this many sums per run.
    rounds: int
    # Participant ids 0..num_clients-1 may register signing keys, no others.
    num_clients: int

    @property
    def slots(self) -> int:
        return self.params.slots


def secure_agg_problems(sa: SecureAggConfig) -> list[str]:
    """Every problem with the ``secure_agg`` section on its own."""
    p: list[str] = []
    if sa.name not in SECURE_AGG_MODES:
        p.append(f"secure_agg={sa.name!r} is not one of {sorted(SECURE_AGG_MODES)}; pick one "
                 "of those (files in conf/secure_agg/)")
    if sa.name == "none":
        return p
    p += param_problems(poly_modulus_degree=sa.poly_modulus_degree,
                        coeff_mod_bit_sizes=sa.coeff_mod_bit_sizes,
                        global_scale_bits=sa.global_scale_bits)
    if sa.encrypt_threads < 1:
        p.append(f"secure_agg.encrypt_threads={sa.encrypt_threads} must be >= 1")
    noise = sa.decrypt_noise_std
    if (isinstance(noise, bool) or not isinstance(noise, int | float)
            or not math.isfinite(noise) or noise < 0):
        p.append(f"secure_agg.decrypt_noise_std={noise} must be a finite number >= 0 "
                 "(e.g. 1e-6); NaN or inf would silently turn noise flooding off")
    if sa.min_participants < 2:
        p.append(f"secure_agg.min_participants={sa.min_participants} must be >= 2: a sum of "
                 "one participant is that participant's update")
    return p


def secure_agg_plan(sa: SecureAggConfig, *, unit_weights: bool, rounds: int,
                    num_clients: int) -> SecureAggPlan | None:
    if sa.name == "none":
        return None
    return SecureAggPlan(
        params=CKKSParams(sa.poly_modulus_degree, tuple(sa.coeff_mod_bit_sizes),
                          sa.global_scale_bits),
        encrypt_threads=sa.encrypt_threads, min_participants=sa.min_participants,
        decrypt_noise_std=float(sa.decrypt_noise_std),
        decryptor_resources=tuple(sorted(sa.decryptor_resources.items())),
        unit_weights=unit_weights, rounds=rounds, num_clients=num_clients)
