"""Aggregator and decryptor without Ray: keys per role, exactness, integrity, dropouts."""

from __future__ import annotations

import numpy as np
import pytest

from rayfed.errors import IntegrityError, SecureAggError
from rayfed.secure_agg.keys import KeyAuthority, load_public_context
from rayfed.secure_agg.params import PRESETS
from rayfed.secure_agg.roles import Aggregator, Decryptor
from rayfed.secure_agg.stage import EncryptStage
from rayfed.stages import UpdateContext

NUM_PARAMS = 100_000  # the acceptance bar: a model of at least 100k parameters


@pytest.fixture(scope="module")
def authority():
    return KeyAuthority(PRESETS["n8192"])


def roles(authority, *, size=NUM_PARAMS, noise_std=1e-6, min_participants=2):
    stage = EncryptStage(slots=4096, threads=2)
    stage.provision(authority.secret_bundle())
    aggregator = Aggregator(authority.public_bundle(), size=size, slots=4096)
    decryptor = Decryptor(authority.secret_bundle(), min_participants=min_participants,
                          noise_std=noise_std, rng=np.random.default_rng(0))
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
        Aggregator(authority.secret_bundle(), size=10, slots=4096)
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
    decryptor.begin_round(1, range(10))
    aggregate = aggregator.aggregate(updates, server_round=1)
    total, seconds = decryptor.decrypt_aggregate(1, list(range(10)), aggregate)
    mean = total / aggregate.total_weight
    exact = np.sum([k * d.astype(np.float64) for k, d in zip(n, deltas, strict=True)],
                   axis=0) / sum(n)
    assert aggregate.total_weight == sum(n) and seconds > 0
    assert np.abs(mean - exact).max() < 1e-6
    # ... and the check can fail: a wrong weighting is far off.
    assert np.abs(total / 10 - exact).max() > 1e-3


def test_dropout_after_encryption_survivors_sum_and_denominator(authority):
    stage, aggregator, decryptor = roles(authority, size=5000)
    rng = np.random.default_rng(1)
    n = [100, 200, 300, 400]
    deltas = [rng.normal(0, 0.02, 5000) for _ in n]
    updates = [encrypt(stage, d, pid=i, n=k) for i, (d, k) in enumerate(zip(deltas, n,
                                                                             strict=True))]
    decryptor.begin_round(1, [0, 1, 2, 3])
    survivors = [updates[0], updates[2], updates[3]]  # participant 1 died after encrypting
    aggregate = aggregator.aggregate(survivors, server_round=1)
    total, _ = decryptor.decrypt_aggregate(1, [0, 2, 3], aggregate)
    exact = (100 * deltas[0] + 300 * deltas[2] + 400 * deltas[3]) / 800
    assert aggregate.total_weight == 800 and aggregate.participant_ids == (0, 2, 3)
    np.testing.assert_allclose(total / aggregate.total_weight, exact, atol=1e-6, rtol=0)


def test_foreign_key_ciphertext_is_rejected_by_aggregator_and_decryptor(authority):
    stage, aggregator, decryptor = roles(authority, size=100)
    foreign_stage, foreign_aggregator, _ = roles(KeyAuthority(PRESETS["n8192"]), size=100)
    mine = encrypt(stage, np.ones(100), pid=0, n=10)
    theirs = encrypt(foreign_stage, np.ones(100), pid=1, n=10)
    assert "foreign key" in aggregator.screen(theirs, server_round=1)
    assert aggregator.screen(mine, server_round=1) is None
    with pytest.raises(IntegrityError, match="participant 1 was made under a foreign key"):
        aggregator.aggregate([mine, theirs], server_round=1)
    decryptor.begin_round(1, [0, 1])
    foreign_sum = foreign_aggregator.aggregate([theirs, encrypt(foreign_stage, np.ones(100),
                                                                pid=0, n=1)], server_round=1)
    with pytest.raises(IntegrityError, match="foreign key"):
        decryptor.decrypt_aggregate(1, [0, 1], foreign_sum)


def test_stale_round_is_rejected_and_each_round_opens_once(authority):
    stage, aggregator, decryptor = roles(authority, size=100)
    old = [encrypt(stage, np.ones(100), pid=i, n=5, server_round=1) for i in range(2)]
    new = [encrypt(stage, np.ones(100), pid=i, n=5, server_round=2) for i in range(2)]
    assert "stale" in aggregator.screen(old[0], server_round=2)
    with pytest.raises(IntegrityError, match="labelled round 1, but this is round 2"):
        aggregator.aggregate([old[0], new[1]], server_round=2)
    decryptor.begin_round(1, [0, 1])
    old_sum = aggregator.aggregate(old, server_round=1)
    decryptor.decrypt_aggregate(1, [0, 1], old_sum)
    with pytest.raises(IntegrityError, match="already decrypted"):
        decryptor.decrypt_aggregate(1, [0, 1], old_sum)
    decryptor.begin_round(2, [0, 1])
    with pytest.raises(IntegrityError, match="stale rounds are never decrypted"):
        decryptor.decrypt_aggregate(1, [0, 1], old_sum)
    with pytest.raises(IntegrityError, match="not after round 2"):
        decryptor.begin_round(2, [0, 1])


def test_decryptor_opens_only_the_committed_set(authority):
    stage, aggregator, decryptor = roles(authority, size=100)
    ups = [encrypt(stage, np.ones(100), pid=i, n=5) for i in range(3)]
    decryptor.begin_round(1, [0, 1])
    single = aggregator.aggregate(ups[:1], server_round=1)
    with pytest.raises(SecureAggError, match=r"below secure_agg\.min_participants=2"):
        decryptor.decrypt_aggregate(1, [0], single)
    pair = aggregator.aggregate(ups[:2], server_round=1)
    with pytest.raises(IntegrityError, match="differs from the aggregate"):
        decryptor.decrypt_aggregate(1, [0, 2], pair)
    unselected = aggregator.aggregate(ups[1:], server_round=1)
    with pytest.raises(IntegrityError, match=r"participants \[2\] were not selected"):
        decryptor.decrypt_aggregate(1, [1, 2], unselected)


def test_encrypt_stage_refuses_without_key_and_non_finite_updates(authority):
    ctx = UpdateContext(0, 1, 10, rng=np.random.default_rng(0))
    with pytest.raises(SecureAggError, match="no key"):
        EncryptStage(slots=4096).encode(np.ones(3), ctx)
    stage, _, _ = roles(authority)
    with pytest.raises(SecureAggError, match="non-finite"):
        stage.encode(np.array([1.0, np.nan]), ctx)
