"""Secure aggregation in the real round loop on a local Ray.

What the aggregator process actually receives is recorded by overriding
``Orchestrator._collect`` (the step that takes results off Ray), so the checks
below are about real payloads, not mocks.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ray

from rayfed.config import PrivacyConfig, SecureAggConfig
from rayfed.fl.host import ParticipantHost
from rayfed.fl.orchestrator import Orchestrator
from rayfed.fl.rounds import participant_seed, select_participants
from rayfed.models import build_model, get_flat, spec_from_config
from rayfed.plan import resolve
from rayfed.secure_agg import session
from rayfed.secure_agg.ciphertexts import EncryptedUpdate
from rayfed.secure_agg.keys import KeyAuthority
from rayfed.secure_agg.params import PRESETS
from rayfed.secure_agg.session import KeyAuthorityActor, decryptor_options
from rayfed.secure_agg.signing import KeyRegistry
from rayfed.secure_agg.stage import EncryptMaterials, EncryptStage
from rayfed.stages import UpdateContext
from rayfed.tracking.mlflow import MlflowTracker
from rayfed.types import Failure, FitIns, FitRes
from tests.conftest import small_config

pytestmark = pytest.mark.usefixtures("ray_session")

CKKS = SecureAggConfig(name="ckks")


class Recording(Orchestrator):
    """Keeps everything the aggregator received; ``tamper`` may alter it in transit."""

    def __init__(self, *args, tamper=None, **kwargs):
        self.received: list = []
        self.tamper = tamper
        super().__init__(*args, **kwargs)

    def _collect(self, pending, server_round):
        results, num_late = super()._collect(pending, server_round)
        if self.tamper is not None:
            results = self.tamper(results, server_round)
        self.received.extend(results)
        return results, num_late


def plaintext_round(cfg):
    """Round 1 of FedAvg in this process: the initial weights and each delta."""
    cfg = replace(cfg, secure_agg=SecureAggConfig())
    host = ParticipantHost(resolve(cfg))
    spec = spec_from_config(cfg.model, input_shape=host._data.input_shape,
                            num_classes=host._data.num_classes)
    w = get_flat(build_model(spec, seed=cfg.seed))
    rng = np.random.default_rng([cfg.seed, 0x5E1EC7])
    ids = select_participants(rng, num_clients=cfg.fl.num_clients, k=cfg.fl.clients_per_round)
    res = host.fit(1, w, [FitIns(i, 1, participant_seed(cfg.seed, 1, i)) for i in ids])
    return w, {r.participant_id: r for r in res}


def weighted_mean(fits, ids):
    n = np.array([fits[i].num_examples for i in ids], dtype=np.float64)
    return (n[:, None] * np.stack([fits[i].delta for i in ids])).sum(0) / n.sum()


def windows(blob: bytes, width: int = 48, count: int = 8) -> list[bytes]:
    """Distinctive slices of ``blob`` (runs of zeros would match anything)."""
    step = max(1, (len(blob) - width) // count)
    cuts = (blob[i : i + width] for i in range(step // 2, len(blob) - width, step))
    return [w for w in cuts if len(set(w)) >= 32]


def files_under(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]


def test_ten_participants_large_model_exact_and_nothing_secret_leaks(tmp_path, monkeypatch):
    class KeyExportingAuthority(KeyAuthorityActor):
        """Test only (defined here so Ray pickles it by value): the real key
        authority plus a way to read its secret key, so that the test can look for
        those bytes on disk; rayfed's own actor has no such method."""

        def secret_for_the_test(self):
            return self._decryptor._context.serialize(save_secret_key=True)

    monkeypatch.setattr(session, "KeyAuthorityActor", KeyExportingAuthority)
    cfg = small_config(
        tmp_path, secure_agg=CKKS, model={"hidden_sizes": [1024, 64]},
        fl={"num_clients": 10, "clients_per_round": 10, "min_clients": 8, "rounds": 1},
        checkpoint={"enabled": True},
        tracking={"enabled": True, "experiment": "secure-agg-test"})
    w0, fits = plaintext_round(cfg)
    assert w0.size >= 100_000
    tracker = MlflowTracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment)
    with Recording(cfg, tracker=tracker) as orch:
        (r,) = list(orch.rounds())
        tracker.finish("FINISHED")
        assert r.status == "completed" and r.num_reported == 10
        assert not orch.secure_agg.aggregator.holds_secret_key
        assert orch.pipeline.stages[-1]._context is None  # no key reached this process
        secret = ray.get(orch.secure_agg._actor.secret_for_the_test.remote())
        public = orch.secure_agg._actor.public_bundle.remote()
        public = ray.get(public).context
        got = orch.weights.astype(np.float64) - w0
        metrics = orch.secure_agg.metrics()
    # The decrypted aggregate equals the plaintext FedAvg aggregate.
    exact = weighted_mean(fits, range(10))
    err = np.abs(got - exact).max()
    print(f"10 participants, {w0.size} parameters: max abs error {err:.3e}")
    assert err < 1e-6, err
    assert metrics["secure_agg_ciphertexts"] == 10 * 33  # ⌈132810 / 4096⌉ each
    assert metrics["secure_agg_decrypt_seconds"] > 0
    assert metrics["secure_agg_sign_seconds"] > 0 and metrics["secure_agg_verify_seconds"] > 0

    # The aggregator received ciphertexts only: no array, no plaintext delta inside.
    assert len(orch.received) == 10
    assert all(isinstance(x, FitRes) and isinstance(x.delta, EncryptedUpdate)
               for x in orch.received)
    wire = pickle.dumps(orch.received)
    plain = [w for f in fits.values() for w in windows(f.delta.tobytes())
             + windows(f.delta.astype(np.float64).tobytes())]
    assert plain and not any(w in wire for w in plain)

    # Neither the secret key nor an individual update is in MLflow or the checkpoints.
    secret_only = [w for w in windows(secret, count=200) if w not in public][:16]
    assert len(secret_only) >= 8
    stored = files_under(tmp_path / "ckpt", tmp_path / "mlruns", tmp_path / "mlartifacts")
    stored += [tmp_path / "mlflow.db"]
    assert any(p.suffix == ".ckpt" for p in stored)
    for path in stored:
        blob = path.read_bytes()
        assert not any(w in blob for w in secret_only), path
        assert not any(w in blob for w in plain), path
        assert b"KeyBundle" not in blob and b"EncryptedUpdate" not in blob, path


def foreign_update(size: int, pid: int, server_round: int) -> EncryptedUpdate:
    """A ciphertext under another run's key, signed by that run's key for ``pid``."""
    stage = EncryptStage(slots=PRESETS["n8192"].slots)
    stage.provision(EncryptMaterials(KeyAuthority(PRESETS["n8192"]).public_bundle(),
                                     KeyRegistry(num_clients=pid + 1)))
    stage.enrol([pid])
    ctx = UpdateContext(pid, server_round, 10, rng=np.random.default_rng(0))
    return stage.encode(np.zeros(size, dtype=np.float32), ctx)


def test_dropout_foreign_key_and_stale_round_leave_the_survivors_mean(tmp_path):
    cfg = small_config(tmp_path, secure_agg=CKKS, fl={"rounds": 1, "min_clients": 3})
    w0, fits = plaintext_round(cfg)

    def tamper(results, server_round):
        out = []
        for x in results:
            if x.participant_id == 1:  # encrypted, then lost on the way
                out.append(Failure(1, server_round, "crash", "lost after encrypting"))
            elif x.participant_id == 2:
                out.append(replace(x, delta=foreign_update(w0.size, 2, server_round)))
            elif x.participant_id == 3:
                out.append(replace(x, delta=replace(x.delta, server_round=server_round - 1)))
            else:
                out.append(x)
        return out

    with Recording(cfg, tamper=tamper) as orch:
        (r,) = list(orch.rounds())
        got = orch.weights.astype(np.float64) - w0
    reasons = {f.participant_id: f.reason for f in r.failures}
    assert r.status == "completed" and r.num_reported == 3 and sorted(reasons) == [1, 2, 3]
    assert "foreign key" in reasons[2] and "stale" in reasons[3]
    np.testing.assert_allclose(got, weighted_mean(fits, [0, 4, 5]), atol=1e-6, rtol=0)
    assert np.abs(got - weighted_mean(fits, range(6))).max() > 1e-4


def test_accuracy_matches_plaintext_fedavg_with_the_same_seed(tmp_path):
    fl = {"rounds": 4, "min_clients": 3}
    accs = {}
    for name in ("none", "ckks"):
        cfg = small_config(tmp_path, secure_agg=SecureAggConfig(name=name), fl=fl)
        with Orchestrator(cfg) as orch:
            accs[name] = list(orch.rounds())[-1].test_accuracy
    assert accs["ckks"] > 0.25  # learning, well above chance (0.1)
    assert abs(accs["ckks"] - accs["none"]) <= 0.005, accs


def test_client_side_dp_composes_with_encryption(tmp_path):
    """DP-FedAvg with noise at the participants: clip → noise → encrypt gives the
    plaintext DP run's weights (the same seeds draw the same noise)."""
    # Seeded noise on purpose (acknowledged): both runs must draw the same shares.
    privacy = PrivacyConfig(name="central_dp", noise_placement="clients",
                            noise_multiplier=0.5, clipping_norm=1.0, delta=1e-3,
                            secure_rng=False, allow_server_known_noise=True)
    weights = {}
    for name in ("none", "ckks"):
        cfg = small_config(tmp_path, secure_agg=SecureAggConfig(name=name), privacy=privacy,
                           fl={"rounds": 1, "min_clients": 2})
        with Orchestrator(cfg) as orch:
            if name == "ckks":
                assert orch.pipeline.names == ("dp_clip", "dp_noise", "encrypt")
            (r,) = list(orch.rounds())
            assert r.status == "completed"
            weights[name] = orch.weights.copy()
    # Unit weights: the decryptor's flooding noise (1e-6) is divided by ~6, not Σ n_i.
    np.testing.assert_allclose(weights["ckks"], weights["none"], atol=5e-6, rtol=0)


def test_decryptor_placement_on_a_single_node_cluster():
    """No other node and no such resource: the decryptor runs locally, reserving
    no CPU that participants need (a named resource it lacks is dropped)."""
    opts = decryptor_options(SecureAggConfig(name="ckks", decryptor_resources={"keyholder": 1}))
    assert opts["num_cpus"] == 0 and "resources" not in opts
    assert "scheduling_strategy" not in opts  # this cluster has one node
    have = decryptor_options(SecureAggConfig(name="ckks", decryptor_resources={"CPU": 1}))
    assert have["resources"] == {"CPU": 1}
