"""Aggregator and decryptor without Ray: keys per role, exactness, integrity, dropouts."""

from __future__ import annotations

import numpy as np
import pytest

from rayfed.errors import IntegrityError, SecureAggError
from rayfed.secure_agg.keys import KeyAuthority, load_public_context
from rayfed.secure_agg.params import PRESETS
from rayfed.secure_agg.roles import Aggregator, Decryptor
from rayfed.secure_agg.stage import EncryptMaterials, EncryptStage
from rayfed.stages import UpdateContext

NUM_PARAMS = 100_000  # the acceptance bar: a model of at least 100k parameters


@pytest.fixture(scope="module")
def authority():
    return KeyAuthority(PRESETS["n8192"])


def roles(authority, *, size=NUM_PARAMS, noise_std=1e-6, min_participants=2, clients=10,
          max_rounds=5):
    """A participant-side stage (public key only) that enrolled ``clients``
    participants with the decryptor, whose registry is then sealed."""
    params = PRESETS["n8192"]
    decryptor = Decryptor(authority.secret_bundle(), params=params, size=size,
                          min_participants=min_participants, max_rounds=max_rounds,
                          num_clients=clients, noise_std=noise_std,
                          rng=np.random.default_rng(0))
    stage = EncryptStage(slots=4096, threads=2)
    stage.provision(EncryptMaterials(authority.public_bundle(), decryptor))
    stage.enrol(range(clients))
    aggregator = Aggregator(authority.public_bundle(), size=size, params=params)
    aggregator.public_keys = decryptor.seal()
    return stage, aggregator, decryptor


def encrypt(stage, delta, *, pid, n, server_round=1):
    ctx = UpdateContext(pid, server_round, n, rng=np.random.default_rng(pid))
    return stage.encode(delta.astype(np.float32), ctx)


def test_the_aggregator_holds_no_secret_galois_or_relin_key(authority):
    _, aggregator, _ = roles(authority)
    assert not aggregator.holds_secret_key
    ctx = load_public_context(authority.public_bundle())
    assert not ctx.is_private() and not ctx.has_galois_keys() and not ctx.has_relin_keys()
    with pytest.raises(SecureAggError, match="holding the secret key"):
        Aggregator(authority.secret_bundle(), size=10, params=PRESETS["n8192"])
    # Participants encrypt under the public context alone.
    stage, _, _ = roles(authority, size=10)
    assert not stage._context.is_private()
    with pytest.raises(SecureAggError, match="holding the secret key"):
        EncryptStage(slots=4096).provision(EncryptMaterials(authority.secret_bundle(), None))
    assert "bytes" in repr(authority.secret_bundle())  # the key never shows in a repr
    assert str(authority.secret_bundle().context[:64]) not in repr(authority.secret_bundle())


def test_ten_participants_decrypted_mean_equals_plaintext_mean(authority):
    stage, aggregator, decryptor = roles(authority)
    rng = np.random.default_rng(7)
    n = [int(k) for k in rng.integers(50, 400, size=10)]
    deltas = [rng.normal(0, 0.02, NUM_PARAMS).astype(np.float32) for _ in n]
    updates = [encrypt(stage, d, pid=i, n=k) for i, (d, k) in enumerate(zip(deltas, n,
                                                                             strict=True))]
    assert all(len(u.chunks) == 25 for u in updates)  # ⌈100000 / 4096⌉ ckks_vectors
    assert all(aggregator.screen(u, server_round=1, expected_weight=k) is None
               for u, k in zip(updates, n, strict=True))
    decryptor.begin_round(1, range(10))
    total, weight, seconds = decryptor.decrypt_aggregate(1, list(range(10)), updates)
    mean = total / weight
    exact = np.sum([k * d.astype(np.float64) for k, d in zip(n, deltas, strict=True)],
                   axis=0) / sum(n)
    assert weight == sum(n) and seconds["decrypt"] > 0 and seconds["verify"] > 0
    assert np.abs(mean - exact).max() < 1e-6
    # ... and the check can fail: a wrong weighting is far off.
    assert np.abs(total / 10 - exact).max() > 1e-3


def test_dropout_after_encryption_survivors_sum_and_denominator(authority):
    stage, _, decryptor = roles(authority, size=5000)
    rng = np.random.default_rng(1)
    n = [100, 200, 300, 400]
    deltas = [rng.normal(0, 0.02, 5000) for _ in n]
    updates = [encrypt(stage, d, pid=i, n=k) for i, (d, k) in enumerate(zip(deltas, n,
                                                                             strict=True))]
    decryptor.begin_round(1, [0, 1, 2, 3])
    survivors = [updates[0], updates[2], updates[3]]  # participant 1 died after encrypting
    total, weight, _ = decryptor.decrypt_aggregate(1, [0, 2, 3], survivors)
    exact = (100 * deltas[0] + 300 * deltas[2] + 400 * deltas[3]) / 800
    assert weight == 800
    np.testing.assert_allclose(total / weight, exact, atol=1e-6, rtol=0)


def test_foreign_key_ciphertext_is_rejected_by_aggregator_and_decryptor(authority):
    stage, aggregator, decryptor = roles(authority, size=100)
    foreign_stage, _, _ = roles(KeyAuthority(PRESETS["n8192"]), size=100)
    mine = encrypt(stage, np.ones(100), pid=0, n=10)
    theirs = encrypt(foreign_stage, np.ones(100), pid=1, n=10)
    assert "foreign key" in aggregator.screen(theirs, server_round=1)
    assert aggregator.screen(mine, server_round=1) is None
    decryptor.begin_round(1, [0, 1])
    with pytest.raises(IntegrityError, match="participant 1 was made under a foreign key"):
        decryptor.decrypt_aggregate(1, [0, 1], [mine, theirs])


def test_stale_round_is_rejected_and_each_round_opens_once(authority):
    stage, aggregator, decryptor = roles(authority, size=100)
    old = [encrypt(stage, np.ones(100), pid=i, n=5, server_round=1) for i in range(2)]
    new = [encrypt(stage, np.ones(100), pid=i, n=5, server_round=2) for i in range(2)]
    assert "stale" in aggregator.screen(old[0], server_round=2)
    decryptor.begin_round(1, [0, 1])
    decryptor.decrypt_aggregate(1, [0, 1], old)
    with pytest.raises(IntegrityError, match="already decrypted"):
        decryptor.decrypt_aggregate(1, [0, 1], old)
    decryptor.begin_round(2, [0, 1])
    with pytest.raises(IntegrityError, match="labelled round 1, but this is round 2"):
        decryptor.decrypt_aggregate(2, [0, 1], [old[0], new[1]])
    with pytest.raises(IntegrityError, match="stale rounds are never decrypted"):
        decryptor.decrypt_aggregate(1, [0, 1], old)
    with pytest.raises(IntegrityError, match="not after round 2"):
        decryptor.begin_round(2, [0, 1])
    with pytest.raises(IntegrityError, match=r"beyond the run's planned fl\.rounds=5"):
        decryptor.begin_round(6, [0, 1])


def test_decryptor_opens_only_the_committed_set(authority):
    stage, _, decryptor = roles(authority, size=100)
    ups = [encrypt(stage, np.ones(100), pid=i, n=5) for i in range(3)]
    with pytest.raises(IntegrityError, match=r"below secure_agg\.min_participants"):
        decryptor.begin_round(1, [0])
    decryptor.begin_round(1, [0, 1])
    with pytest.raises(SecureAggError, match=r"below secure_agg\.min_participants=2"):
        decryptor.decrypt_aggregate(1, [0], ups[:1])
    with pytest.raises(IntegrityError, match="differs from the terms"):
        decryptor.decrypt_aggregate(1, [0, 2], ups[:2])
    with pytest.raises(IntegrityError, match=r"participant 2 was not selected"):
        decryptor.decrypt_aggregate(1, [1, 2], ups[1:])
    with pytest.raises(IntegrityError, match="duplicates"):
        decryptor.decrypt_aggregate(1, [0, 0], [ups[0], ups[0]])


def test_encrypt_stage_refuses_without_key_and_non_finite_updates(authority):
    ctx = UpdateContext(0, 1, 10, rng=np.random.default_rng(0))
    with pytest.raises(SecureAggError, match="no key"):
        EncryptStage(slots=4096).encode(np.ones(3), ctx)
    stage, _, _ = roles(authority)
    with pytest.raises(SecureAggError, match="non-finite"):
        stage.encode(np.array([1.0, np.nan]), ctx)
