"""CKKS parameters: the 128-bit bound, presets, and the messages naming the keys."""

from __future__ import annotations

import pytest

from rayfed.errors import ConfigError
from rayfed.secure_agg.keys import KeyAuthority
from rayfed.secure_agg.params import MAX_COEFF_BITS_128, PRESETS, CKKSParams, param_problems


@pytest.mark.parametrize(("n", "bound"), sorted(MAX_COEFF_BITS_128.items()))
def test_one_bit_over_the_bound_is_rejected_and_the_bound_named(n, bound):
    at = [60] * (bound // 60) + [bound % 60]  # SEAL primes are at most 60 bits
    over = [*at[:-1], at[-1] + 1]
    assert sum(at) == bound
    assert [m for m in param_problems(poly_modulus_degree=n, coeff_mod_bit_sizes=at,
                                      global_scale_bits=min(at[0] - 1, 20))
            if "bound" in m] == []
    (msg,) = [m for m in param_problems(poly_modulus_degree=n, coeff_mod_bit_sizes=over,
                                        global_scale_bits=min(over[0] - 1, 20)) if "bound" in m]
    assert f"bound of {bound} bits" in msg and f"poly_modulus_degree={n}" in msg
    assert "secure_agg.coeff_mod_bit_sizes" in msg


def test_presets_are_within_the_bound():
    for p in PRESETS.values():
        assert param_problems(poly_modulus_degree=p.poly_modulus_degree,
                              coeff_mod_bit_sizes=p.coeff_mod_bit_sizes,
                              global_scale_bits=p.global_scale_bits) == []
    assert PRESETS["n8192"].slots == 4096 and PRESETS["n8192"].total_coeff_bits == 200


def test_every_problem_is_reported_at_once():
    problems = param_problems(poly_modulus_degree=5000, coeff_mod_bit_sizes=[70],
                              global_scale_bits=80)
    keys = " ".join(problems)
    assert len(problems) == 4
    for key in ("poly_modulus_degree=5000", "at least two primes", "1..60 bits",
                "global_scale_bits=80"):
        assert key in keys


def test_key_authority_refuses_insecure_parameters():
    with pytest.raises(ConfigError, match="bound of 218 bits"):
        KeyAuthority(CKKSParams(8192, (60, 60, 60, 60), 40))
