"""Checks of the ``secure_agg`` section and of what it may be combined with.

:func:`rayfed.config.validate` calls :func:`secure_agg_problems`; each message
names its key and the fix.
"""

from __future__ import annotations

import math

from rayfed.config import SECURE_AGG_MODES, Config, clients_per_round
from rayfed.secure_agg.params import param_problems


def secure_agg_problems(cfg: Config) -> list[str]:
    """Every problem with ``cfg.secure_agg`` and its combination with other sections."""
    sa = cfg.secure_agg
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
    if (isinstance(sa.decrypt_noise_std, bool)
            or not isinstance(sa.decrypt_noise_std, int | float)
            or not math.isfinite(sa.decrypt_noise_std) or sa.decrypt_noise_std < 0):
        p.append(f"secure_agg.decrypt_noise_std={sa.decrypt_noise_std!r} must be a finite "
                 "number >= 0 (NaN would silently turn noise flooding off), e.g. 1e-6")
    if sa.min_participants < 2:
        p.append(f"secure_agg.min_participants={sa.min_participants} must be >= 2: a sum of "
                 "one participant is that participant's update")
    if cfg.fl.min_clients < sa.min_participants:
        p.append(f"fl.min_clients={cfg.fl.min_clients} must be >= secure_agg.min_participants="
                 f"{sa.min_participants}, so that a round with fewer survivors aborts instead "
                 "of asking the decryptor to open a too-small sum")
    if clients_per_round(cfg.fl) < sa.min_participants:
        p.append(f"a round selects {clients_per_round(cfg.fl)} participant(s), fewer than "
                 f"secure_agg.min_participants={sa.min_participants}; raise "
                 "fl.clients_per_round")
    if cfg.strategy.reducer != "weighted_mean":
        p.append(f"strategy.reducer={cfg.strategy.reducer!r} (strategy={cfg.strategy.name}) "
                 "cannot run with secure_agg=ckks: median, trimmed mean and Krum compare or "
                 "sort individual updates, and the aggregator only ever holds their "
                 "encrypted sum; use a weighted-mean strategy (fedavg, fedadam, fedyogi, ...)")
    p += _composition_problems(cfg)
    return p


def _composition_problems(cfg: Config) -> list[str]:
    p: list[str] = []
    compression = cfg.compression
    if compression.name != "none":
        p.append(f"compression={compression.name!r} cannot be combined with secure_agg=ckks: "
                 "a CKKS ciphertext costs the same N/2 slots whatever the values' precision "
                 "(int8 saves nothing), and top-k picks different coordinates per "
                 "participant, which a slot-wise sum cannot add; set compression=none "
                 "(docs/security.md, 'Compression')")
    privacy = cfg.privacy
    if privacy.name == "central_dp" and privacy.noise_placement != "clients":
        p.append(f"privacy.noise_placement={privacy.noise_placement!r} with secure_agg=ckks "
                 "would add the noise after decryption, so the sum would be released "
                 "without noise; set privacy.noise_placement=clients (clip and noise at each "
                 "participant, before encryption)")
    return p
