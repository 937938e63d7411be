"""Packing: split/join round trip against a slow reference, and the CKKS sum's error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfed.secure_agg.keys import KeyAuthority, load_public_context, load_secret_context
from rayfed.secure_agg.packing import (
    decrypt_chunks,
    encrypt_chunks,
    join,
    num_chunks,
    prescale,
    split,
    sum_ciphertexts,
)
from rayfed.secure_agg.params import PRESETS


def reference_split(values: list[float], slots: int) -> list[list[float]]:
    """One value at a time: the obviously correct chunking."""
    out: list[list[float]] = [[]]
    for v in values:
        if len(out[-1]) == slots:
            out.append([])
        out[-1].append(v)
    return out


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=300), st.integers(1, 64))
def test_split_matches_reference_and_join_inverts_it(values, slots):
    chunks = split(np.asarray(values), slots)
    assert [c.tolist() for c in chunks] == reference_split(values, slots)
    assert len(chunks) == num_chunks(len(values), slots)
    np.testing.assert_array_equal(join(chunks, len(values)), values)


def test_join_refuses_the_wrong_size():
    with pytest.raises(ValueError, match="expected 5"):
        join(split(np.ones(4), 3), 5)


@pytest.fixture(scope="module")
def contexts():
    authority = KeyAuthority(PRESETS["n8192"])
    return (load_secret_context(authority.secret_bundle()),
            load_public_context(authority.public_bundle()))


def test_prescaling_by_num_examples_shrinks_the_error_of_the_mean(contexts):
    """Why participants pre-scale: the error of the mean shrinks by Σ n_i."""
    secret, public = contexts
    rng = np.random.default_rng(0)
    n = rng.integers(50, 400, size=5)
    deltas = [rng.normal(0, 0.05, 6000) for _ in n]
    exact = sum(ni * d for ni, d in zip(n, deltas, strict=True)) / n.sum()
    parts = [encrypt_chunks(secret, split(prescale(d, ni), 4096), threads=2)
             for ni, d in zip(n, deltas, strict=True)]
    mean = decrypt_chunks(secret, sum_ciphertexts(public, parts), 6000) / n.sum()
    prescaled_err = np.abs(mean - exact).max()
    unscaled = [encrypt_chunks(secret, split(d, 4096)) for d in deltas]
    plain_mean = decrypt_chunks(secret, sum_ciphertexts(public, unscaled), 6000) / len(n)
    unscaled_err = np.abs(plain_mean - sum(deltas) / len(n)).max()
    assert prescaled_err < 1e-10 and prescaled_err < unscaled_err / 20
