"""Attacks on secure aggregation (issue #15, items 1-6 and the noise seeds of item 10).

Each test is the attack, mounted with rayfed's own objects on a local Ray: from
the server's process (an ``Orchestrator`` subclass that keeps what it receives,
alters it, or replaces its aggregation step) or from a participant's (a host
actor built with exactly what the placement gives hosts). A test passes when the
attack fails. What stops each one: ``docs/security.md``, "Threats and tests".
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import ray
import tenseal as ts

from rayfed.config import PrivacyConfig, SecureAggConfig, validate
from rayfed.errors import IntegrityError
from rayfed.fl.host import ParticipantHost
from rayfed.fl.orchestrator import Orchestrator
from rayfed.fl.placement import HostActor
from rayfed.fl.rounds import participant_seed
from rayfed.plan import build_pipeline, resolve
from rayfed.privacy.noise import client_noise_std, gaussian_noise
from rayfed.secure_agg.keys import KeyAuthority, KeyBundle
from rayfed.secure_agg.packing import decrypt_chunks
from rayfed.secure_agg.params import PRESETS
from rayfed.stages import UpdateContext
from rayfed.types import FitRes
from tests.conftest import small_config
from tests.integration.test_secure_agg_rounds import plaintext_round, weighted_mean

pytestmark = pytest.mark.usefixtures("ray_session")

CKKS = SecureAggConfig(name="ckks")


class Server(Orchestrator):
    """The server: rayfed's round loop, plus what a curious or malicious one adds.

    ``tamper(orch, results, server_round)`` alters what arrives (a malicious
    participant's bytes in transit); ``attack(secure_agg, fits)`` replaces the
    honest aggregation step, and whatever it returns or raises is kept.
    """

    def __init__(self, *args: Any, tamper=None, attack=None, **kwargs: Any) -> None:
        self.received: list = []
        self.tamper, self.attack, self.outcome = tamper, attack, None
        super().__init__(*args, **kwargs)
        collect, finish = self._collector.collect, self.aggregation.finish

        def collecting(pending, server_round):
            results, num_late = collect(pending, server_round)
            if self.tamper is not None:
                results = self.tamper(self, results, server_round)
            self.received.extend(results)
            return results, num_late

        def finishing(accepted, *, num_params):
            if self.attack is None:
                return finish(accepted, num_params=num_params)
            fits = [r for r in accepted if isinstance(r, FitRes)]
            try:
                self.outcome = self.attack(self.secure_agg, fits)
            except IntegrityError as exc:  # the decryptor refused
                self.outcome = exc
            return np.zeros(num_params, dtype=np.float32)  # the model stays as it was

        self._collector.collect = collecting  # type: ignore[method-assign]
        self.aggregation.finish = finishing  # type: ignore[method-assign]


# -- what the driver can reach ------------------------------------------------


def _is_secret_context(blob: object) -> bool:
    if isinstance(blob, ts.Context):
        return bool(blob.is_private())
    if isinstance(blob, KeyBundle):
        blob = blob.context
    if not isinstance(blob, bytes) or len(blob) < 1024:
        return False
    try:
        return bool(ts.context_from(blob).is_private())
    except Exception:  # not a serialized context
        return False


def secrets_reachable(root: object, *, depth: int = 8) -> list[tuple[str, object]]:
    """(path, value) for each secret CKKS context reachable from ``root``:
    attributes of rayfed objects, containers, every ``ray.ObjectRef`` (fetched)
    and every actor method a caller may invoke without arguments (called)."""
    found: list[tuple[str, object]] = []
    seen: set[int] = set()

    def walk(x: object, path: str, left: int) -> None:
        if id(x) in seen or left < 0:
            return
        seen.add(id(x))
        if _is_secret_context(x):
            found.append((path, x))
        elif isinstance(x, ray.ObjectRef):
            walk(ray.get(x, timeout=60), f"ray.get({path})", left - 1)
        elif isinstance(x, ray.actor.ActorHandle):
            for name in dir(x):
                method = getattr(x, name, None)
                if name.startswith("_") or not isinstance(method, ray.actor.ActorMethod):
                    continue
                try:
                    ref = method.remote()
                except TypeError:  # needs arguments
                    continue
                try:
                    walk(ray.get(ref, timeout=60), f"{path}.{name}()", left - 1)
                except ray.exceptions.RayError:
                    continue
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}[{k!r}]", left - 1)
        elif isinstance(x, list | tuple | set | frozenset):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]", left - 1)
        elif (dataclasses.is_dataclass(x) or isinstance(x, SimpleNamespace)
              or type(x).__module__.startswith(("rayfed", "tests"))):
            for k, v in vars(x).items() if hasattr(x, "__dict__") else ():
                walk(v, f"{path}.{k}", left - 1)

    walk(root, "orch", depth)
    return found


def test_1_the_server_process_reaches_no_secret_key(tmp_path):
    """Item 1: every attribute, object reference and argument-free actor method the
    driver holds, recursively; none yields a context holding the secret key."""
    # The search can fail: a secret behind a reference or an actor method is found.
    secret = KeyAuthority(PRESETS["n8192"]).secret_bundle()

    class Leaky:  # defined here so that Ray pickles it by value
        def materials(self):
            return {"encrypt": secret}

    leaky = ray.remote(Leaky).options(num_cpus=0).remote()
    control = secrets_reachable(SimpleNamespace(ref=ray.put([secret]), actor=leaky))
    assert sorted(p for p, _ in control) == ["orch.actor.materials()['encrypt']",
                                             "ray.get(orch.ref)[0]"], control
    ray.kill(leaky)

    cfg = small_config(tmp_path, secure_agg=CKKS, fl={"rounds": 1})
    with Server(cfg) as orch:
        (r,) = list(orch.rounds())
        assert r.status == "completed"
        found = secrets_reachable(orch) + secrets_reachable(orch.secure_agg)
        stolen = None
        if found:  # what the attack gets: a participant's update, in the clear
            blob = found[0][1]
            key = ts.context_from(blob.context if isinstance(blob, KeyBundle) else blob)
            u = next(x.delta for x in orch.received if isinstance(x, FitRes))
            stolen = decrypt_chunks(key, u.chunks, u.size)[:3] / u.weight
    assert [path for path, _ in found] == [], f"the driver decrypted an update: {stolen}"


def test_2_a_participant_cannot_decrypt_another_participants_update(tmp_path):
    """Item 2: a participant host, built with exactly what the placement gives
    hosts, colludes with the aggregator to open participant 0's ciphertext."""

    class CuriousHost(HostActor):  # defined here so that Ray pickles it by value
        def encrypt_context_is_private(self) -> bool:
            return bool(self._host.pipeline.stages[-1]._context.is_private())

        def open(self, chunks, size):
            return decrypt_chunks(self._host.pipeline.stages[-1]._context, chunks, size)

    cfg = small_config(tmp_path, secure_agg=CKKS, fl={"rounds": 1})
    _, plain = plaintext_round(cfg)
    with Server(cfg) as orch:
        list(orch.rounds())
        curious = ray.remote(CuriousHost).options(num_cpus=0).remote(resolve(cfg),
                                                                     orch.secure_agg.materials)
        victim = next(x for x in orch.received if isinstance(x, FitRes) and x.participant_id == 0)
        private = ray.get(curious.encrypt_context_is_private.remote())
        try:
            opened = ray.get(curious.open.remote(victim.delta.chunks, victim.delta.size))
        except ray.exceptions.RayTaskError as exc:
            opened = exc
        ray.kill(curious)
    assert not private, "a participant host holds the secret key"
    assert isinstance(opened, ValueError) and "secret" in str(opened), (
        f"participant decrypted another's update: max error vs the real one "
        f"{np.abs(np.asarray(opened) / victim.num_examples - plain[0].delta).max():.2e}")


def test_3_the_decryptor_opens_no_sum_over_one_relabelled_or_duplicated_ciphertext(tmp_path):
    """Item 3: the server presents participant 0's ciphertext twice, once relabelled
    as participant 1, as a 'sum of two'; and asks for the literal (0, 0)."""
    cfg = small_config(tmp_path, secure_agg=CKKS, fl={"rounds": 1})

    def attack(sa, fits):
        f0 = fits[0]
        twin = replace(f0, participant_id=fits[1].participant_id,
                       delta=replace(f0.delta, participant_id=fits[1].participant_id))
        total, weight = sa.aggregate([f0, twin])  # (Δ0 + Δ0) / 2 = Δ0, if opened
        return total / weight, f0.participant_id

    with Server(cfg, attack=attack) as orch:
        list(orch.rounds())
        outcome = orch.outcome
        u0 = next(x.delta for x in orch.received if isinstance(x, FitRes))
        try:  # past the aggregator, straight to the decryptor: "the sum of 0 and 0"
            direct = ray.get(orch.secure_agg._actor.decrypt_aggregate.remote(
                1, [u0.participant_id] * 2, [u0, u0]))
        except ray.exceptions.RayTaskError as exc:
            direct = exc
    assert isinstance(outcome, IntegrityError) and "signature" in str(outcome), (
        f"the decryptor opened participant {outcome[1]}'s update alone: {outcome[0][:3]}")
    assert isinstance(direct, IntegrityError) and "duplicates" in str(direct), direct


def test_4_decryptions_are_bounded_no_replayed_round_and_no_round_past_the_plan(tmp_path):
    """Item 4: after round 1's honest opening the server announces a fresh round
    without participant 0 and replays the others' round-1 ciphertexts, to difference
    the two sums; then a round past the planned fl.rounds."""
    cfg = small_config(tmp_path, secure_agg=CKKS, fl={"rounds": 2})
    _, plain = plaintext_round(cfg)

    def attack(sa, fits):
        fits = sorted(fits, key=lambda f: f.participant_id)
        total, weight = sa.aggregate(fits)  # round 1, honest
        refusals = []
        for fresh in (2, cfg.fl.rounds + 1):
            rest = [replace(f, server_round=fresh, delta=replace(f.delta, server_round=fresh))
                    for f in fits[1:]]
            sa.begin_round(fresh, [f.participant_id for f in rest])
            try:
                total2, weight2 = sa.aggregate(rest)
            except IntegrityError as exc:
                refusals.append(str(exc))
                continue
            leaked = (total - total2) / (weight - weight2)  # participant 0's update
            return f"round {fresh} leaked Δ0 within {np.abs(leaked - plain[0].delta).max():.1e}"
        return refusals

    with Server(cfg, attack=attack) as orch:
        next(orch.rounds())
        outcome = orch.outcome
    assert isinstance(outcome, list), outcome
    assert "signature" in outcome[0] and "beyond the run's planned fl.rounds=2" in outcome[1]


def _malformed(orch, results, server_round):
    """Participants 1-4 send bytes that are not this run's ciphertexts."""
    public = orch.secure_agg.aggregator._context
    ring = ts.context(ts.SCHEME_TYPE.CKKS, 16384, coeff_mod_bit_sizes=[60, 50, 50, 50, 60])
    ring.global_scale = 2.0**40
    out = []
    for x in results:
        if not isinstance(x, FitRes) or x.participant_id not in (1, 2, 3, 4):
            out.append(x)
            continue
        good = x.delta.chunks[0]
        n = x.delta.size
        bad = {1: os.urandom(len(good)), 2: good[: len(good) // 3],
               3: ts.ckks_vector(public, [0.0] * n, scale=2.0**20).serialize(),
               4: ts.ckks_vector(ring, [0.0] * n).serialize()}[x.participant_id]
        out.append(replace(x, delta=replace(x.delta, chunks=(bad, *x.delta.chunks[1:]))))
    return out


def test_5_one_participants_malformed_bytes_cannot_crash_the_round(tmp_path):
    """Item 5: random, truncated, wrong-scale and wrong-ring ciphertexts from four
    participants; the round completes on the other two."""
    cfg = small_config(tmp_path, secure_agg=CKKS, fl={"rounds": 1, "min_clients": 2})
    w0, plain = plaintext_round(cfg)
    with Server(cfg, tamper=_malformed) as orch:
        (r,) = list(orch.rounds())
        got = orch.weights.astype(np.float64) - w0
    reasons = {f.participant_id: (f.kind, f.reason) for f in r.failures}
    assert r.status == "completed" and r.num_reported == 2, r
    assert sorted(reasons) == [1, 2, 3, 4]
    assert all(kind == "rejected" and "malformed" in why for kind, why in reasons.values())
    np.testing.assert_allclose(got, weighted_mean(plain, [0, 5]), atol=1e-6, rtol=0)


def test_6_the_encrypted_weight_must_be_the_screened_example_count(tmp_path):
    """Item 6: one participant's weight label says 1e9 (shrinking everyone else's
    share), another's NaN (which aborted the run)."""
    cfg = small_config(tmp_path, secure_agg=CKKS, fl={"rounds": 1})
    w0, plain = plaintext_round(cfg)
    forged = {1: 10**9, 2: float("nan")}

    def relabel(orch, results, server_round):
        return [replace(x, delta=replace(x.delta, weight=forged[x.participant_id]))
                if isinstance(x, FitRes) and x.participant_id in forged else x
                for x in results]

    with Server(cfg, tamper=relabel) as orch:
        (r,) = list(orch.rounds())
        got = orch.weights.astype(np.float64) - w0
    reasons = {f.participant_id: (f.kind, f.reason) for f in r.failures}
    assert r.status == "completed" and sorted(reasons) == [1, 2], r
    assert all(kind == "rejected" and "weight" in why for kind, why in reasons.values())
    np.testing.assert_allclose(got, weighted_mean(plain, [0, 3, 4, 5]), atol=1e-6, rtol=0)


def test_10_the_server_cannot_regenerate_the_participants_noise(tmp_path):
    """Item 10 (secure_rng): with secure_agg=ckks and DP noise at the participants,
    the server derives a participant's noise share from the round seed it sent."""
    privacy = PrivacyConfig(name="central_dp", noise_placement="clients",
                            noise_multiplier=1.0, clipping_norm=1.0, delta=1e-3)
    cfg = small_config(tmp_path, secure_agg=CKKS, privacy=privacy)
    (noise,) = [s for s in build_pipeline(resolve(cfg)).stages if s.name == "dp_noise"]
    seed = participant_seed(cfg.seed, 1, 0)
    sent = noise.encode(np.zeros(1000, dtype=np.float32),
                        UpdateContext(0, 1, 10, rng=np.random.default_rng(seed)))
    std = client_noise_std(noise_multiplier=1.0, clipping_norm=1.0,
                           expected_clients=cfg.fl.clients_per_round)
    guess = gaussian_noise((1000,), std=std, rng=np.random.default_rng(seed))
    assert np.abs(sent - guess).max() > 0.1 * std, "the server regenerated the noise share"
    # Turning secure noise off there is refused unless acknowledged by name.
    off = replace(cfg, privacy=replace(privacy, secure_rng=False))
    assert any("privacy.allow_server_known_noise=true" in m for m in validate(off))
    assert validate(replace(off, privacy=replace(off.privacy,
                                                 allow_server_known_noise=True))) == []


def test_a_host_of_the_real_placement_holds_only_the_public_context(tmp_path):
    """The participants' side of item 1's enumeration, on the placement's own hosts:
    every host's encrypt stage can encrypt, none can decrypt."""
    cfg = small_config(tmp_path, secure_agg=CKKS, fl={"rounds": 1})
    with Orchestrator(cfg) as orch:
        host = ParticipantHost(resolve(cfg), ray.get(ray.put(orch.secure_agg.materials)))
        stage = host.pipeline.stages[-1]
        assert stage._context is not None and not stage._context.is_private()
        # The placement's actors were built with this same, public-only material.
        assert not secrets_reachable(orch.secure_agg.materials)
        with pytest.raises(IntegrityError, match="registry was sealed"):
            host.enrol([0])  # no key can be added once round 1 may begin
