"""Signed labels, the key registry, and parsing of untrusted ciphertext bytes (no Ray)."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import tenseal as ts

from rayfed.errors import IntegrityError
from rayfed.secure_agg.keys import KeyAuthority, load_public_context
from rayfed.secure_agg.params import PRESETS
from rayfed.secure_agg.roles import Aggregator, Decryptor
from rayfed.secure_agg.signing import KeyRegistry, ParticipantSigners
from rayfed.secure_agg.stage import EncryptMaterials, EncryptStage
from rayfed.stages import UpdateContext

SIZE = 5000  # two chunks: 4096 + 904 values


@pytest.fixture(scope="module")
def authority():
    return KeyAuthority(PRESETS["n8192"])


@pytest.fixture
def run(authority):
    decryptor = Decryptor(authority.secret_bundle(), params=PRESETS["n8192"], size=SIZE,
                          min_participants=2, max_rounds=3, num_clients=3, noise_std=0.0,
                          rng=np.random.default_rng(0))
    stage = EncryptStage(slots=4096)
    stage.provision(EncryptMaterials(authority.public_bundle(), decryptor))
    stage.enrol(range(3))
    aggregator = Aggregator(authority.public_bundle(), size=SIZE, params=PRESETS["n8192"])
    aggregator.public_keys = decryptor.seal()
    return stage, aggregator, decryptor


def encrypt(stage, pid, n=10, server_round=1):
    ctx = UpdateContext(pid, server_round, n, rng=np.random.default_rng(pid))
    return stage.encode(np.full(SIZE, 0.01 * (pid + 1), dtype=np.float32), ctx)


def resign(stage, update):
    """What a malicious *participant* can do: sign whatever it sends with its own key."""
    signature, _ = stage._signers.sign(update.label())
    return replace(update, signature=signature)


def test_a_participants_own_signature_does_not_make_malformed_bytes_pass(authority, run):
    stage, aggregator, decryptor = run
    good = encrypt(stage, 0)
    public = load_public_context(authority.public_bundle())
    wrong_scale = ts.ckks_vector(public, [0.0] * 4096, scale=2.0**20).serialize()
    ring = ts.context(ts.SCHEME_TYPE.CKKS, 16384, coeff_mod_bit_sizes=[60, 50, 50, 50, 60])
    ring.global_scale = 2.0**40
    wrong_ring = ts.ckks_vector(ring, [0.0] * 4096).serialize()
    bad = {"random": os.urandom(len(good.chunks[0])), "truncated": good.chunks[0][:1000],
           "empty": b"", "wrong scale": wrong_scale, "wrong ring": wrong_ring,
           "huge": good.chunks[0] * 3, "wrong length": good.chunks[1]}
    for what, blob in bad.items():
        forged = resign(stage, replace(good, chunks=(blob, good.chunks[1])))
        problem = aggregator.screen(forged, server_round=1, expected_weight=10)
        assert problem is not None and "malformed" in problem, (what, problem)
    assert aggregator.screen(good, server_round=1, expected_weight=10) is None
    # The decryptor parses again: the server forwarding a malformed term is refused.
    decryptor.begin_round(1, [0, 1])
    forged = resign(stage, replace(good, chunks=(wrong_scale, good.chunks[1])))
    with pytest.raises(IntegrityError, match=r"malformed.*scale"):
        decryptor.decrypt_aggregate(1, [0, 1], [forged, encrypt(stage, 1)])


def test_weight_label_must_be_the_screened_count(run):
    stage, aggregator, _ = run
    good = encrypt(stage, 0, n=10)
    assert aggregator.screen(good, server_round=1, expected_weight=10) is None
    for weight in (10**9, float("nan"), float("inf"), 0, -3, True, 10.0):
        forged = resign(stage, replace(good, weight=weight))
        problem = aggregator.screen(forged, server_round=1, expected_weight=10)
        assert problem is not None and "weight" in problem, (weight, problem)
    assert "differs from the 11" in aggregator.screen(good, server_round=1, expected_weight=11)


def test_relabelled_or_altered_ciphertexts_fail_the_signature(run):
    stage, aggregator, decryptor = run
    u0, u1 = encrypt(stage, 0), encrypt(stage, 1)
    as_other = replace(u0, participant_id=2)          # one update presented as another's
    reweighted = replace(u0, weight=20)               # label changed after signing
    swapped = replace(u0, chunks=u1.chunks)           # bytes swapped under a label
    for forged in (as_other, reweighted, swapped, replace(u0, signature=b"")):
        assert "signature" in aggregator.screen(forged, server_round=1)
    decryptor.begin_round(1, [0, 1, 2])
    with pytest.raises(IntegrityError, match="signature"):
        decryptor.decrypt_aggregate(1, [0, 2], [u0, as_other])
    total, weight, _ = decryptor.decrypt_aggregate(1, [0, 1], [u0, u1])
    assert weight == 20 and abs(total[0] - 10 * (0.01 + 0.02)) < 1e-6


def test_registry_one_key_per_id_sealed_before_round_one(authority):
    registry = KeyRegistry(num_clients=2)
    squatter = ParticipantSigners()
    squatter.enrol([1], registry)  # someone else claims participant 1 first
    honest = ParticipantSigners()
    with pytest.raises(IntegrityError, match="participant 1 already has a registered key"):
        honest.enrol([0, 1], registry)
    with pytest.raises(IntegrityError, match=r"not one of this run's fl\.num_clients=2"):
        ParticipantSigners().enrol([7], registry)
    registry.seal()
    with pytest.raises(IntegrityError, match="after the key registry was sealed"):
        ParticipantSigners().enrol([0], registry)
    partial = KeyRegistry(2)
    ParticipantSigners().enrol([0], partial)
    with pytest.raises(IntegrityError, match=r"participants \[1\] never registered"):
        partial.seal()
    decryptor = Decryptor(authority.secret_bundle(), params=PRESETS["n8192"], size=SIZE,
                          min_participants=2, max_rounds=3, num_clients=2, noise_std=0.0,
                          rng=np.random.default_rng(0))
    with pytest.raises(IntegrityError, match="not sealed"):
        decryptor.begin_round(1, [0, 1])
    # A host that never enrolled (or restarted after sealing) cannot sign.
    stage = EncryptStage(slots=4096)
    stage.provision(EncryptMaterials(authority.public_bundle(), decryptor))
    with pytest.raises(IntegrityError, match="no signing key for participant 0"):
        encrypt(stage, 0)
    assert "Ed25519" not in repr(honest) and "PrivateKey" not in repr(honest)
