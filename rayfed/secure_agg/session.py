"""Secure aggregation in the round loop: the Ray edge of ``rayfed.secure_agg``.

One :class:`KeyAuthorityActor` per run makes the CKKS keys inside itself and is
also the decryptor: the secret key exists in that process only, and no method of
it returns secret bytes to any caller. It is placed through
``secure_agg.decryptor_resources`` or, when the cluster has another node, away
from the server's node. The server process (:class:`SecureAggregation`) holds:

* the public context (the aggregator refuses a private one);
* ``materials``: what each participant host receives, the same public context
  and a handle to register its participants' signing keys with the decryptor
  (``stage.EncryptMaterials``); nothing in it resolves to a secret key;
* the participants' registered public signing keys, once the registry is sealed.

Before round 1: each host enrols its participants (:meth:`EncryptStage.enrol`:
key pairs made on the host, public halves registered straight with the
decryptor), then the server calls :meth:`SecureAggregation.seal`.
Per round: ``begin_round`` commits the selection to the decryptor; ``screen``
turns a foreign-key, stale, wrongly weighted, malformed or unsigned ciphertext
into that participant's rejection; ``aggregate`` forwards the survivors'
ciphertexts, and the decryptor verifies, sums and opens them (once per round).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayfed.runtime import available_resources
from rayfed.secure_agg.ciphertexts import EncryptedUpdate
from rayfed.secure_agg.config import SecureAggPlan
from rayfed.secure_agg.keys import KeyAuthority, KeyBundle
from rayfed.secure_agg.params import CKKSParams
from rayfed.secure_agg.roles import Aggregator, Decryptor
from rayfed.secure_agg.stage import EncryptMaterials
from rayfed.types import Failure, FitRes, PartialAggregate

log = logging.getLogger(__name__)


class KeyAuthorityActor:
    """Ray actor: the run's key authority, which is also its decryptor.

    The secret key is made here and handed to the :class:`Decryptor` in this
    process; every method returns public values only.
    """

    def __init__(self, params: CKKSParams, *, size: int, min_participants: int,
                 max_rounds: int, num_clients: int, noise_std: float) -> None:
        authority = KeyAuthority(params)
        self._public = authority.public_bundle()
        # Flooding noise must be unpredictable to the aggregator: OS entropy.
        self._decryptor = Decryptor(authority.secret_bundle(), params=params, size=size,
                                    min_participants=min_participants, max_rounds=max_rounds,
                                    num_clients=num_clients, noise_std=noise_std,
                                    rng=np.random.default_rng())

    def public_bundle(self) -> KeyBundle:
        return self._public

    def register(self, participant_id: int, public_key: bytes) -> None:
        self._decryptor.register(participant_id, public_key)

    def seal(self) -> dict[int, bytes]:
        return self._decryptor.seal()

    def begin_round(self, server_round: int, selected: list[int]) -> None:
        self._decryptor.begin_round(server_round, selected)

    def decrypt_aggregate(self, server_round: int, participant_ids: list[int],
                          terms: list[EncryptedUpdate]
                          ) -> tuple[np.ndarray, int, dict[str, float]]:
        return self._decryptor.decrypt_aggregate(server_round, participant_ids, terms)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


@dataclass(frozen=True)
class RemoteRegistrar:
    """The decryptor's registration endpoint as a participant host calls it."""

    actor: Any

    def register(self, participant_id: int, public_key: bytes) -> None:
        ray.get(self.actor.register.remote(participant_id, public_key))


def decryptor_options(sa: SecureAggPlan | Any) -> dict[str, Any]:
    """Where the key authority runs: on ``decryptor_resources`` if the cluster has
    them, else on a node other than the server's if there is one."""
    # No CPU reserved: it decrypts one sum per round and must not take a slot
    # from the participants (a 2-CPU test cluster would otherwise stall).
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
    keep = available_resources(dict(sa.decryptor_resources),
                               what="secure_agg.decryptor_resources")
    if keep:
        options["resources"] = keep
        return options
    here = ray.get_runtime_context().get_node_id()
    others = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if others:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(others[0], soft=True)
    return options


class SecureAggregation:
    """The server's side of secure aggregation for one run."""

    def __init__(self, sa: SecureAggPlan, *, num_params: int) -> None:
        params = sa.params
        actor_cls: Any = ray.remote(KeyAuthorityActor).options(**decryptor_options(sa))
        self._actor: Any = actor_cls.remote(
            params, size=num_params, min_participants=sa.min_participants,
            max_rounds=sa.rounds, num_clients=sa.num_clients,
            noise_std=sa.decrypt_noise_std)
        public: KeyBundle = ray.get(self._actor.public_bundle.remote())
        # What every participant host receives at construction: public only.
        self.materials: dict[str, EncryptMaterials] = {
            "encrypt": EncryptMaterials(public, RemoteRegistrar(self._actor))}
        self.aggregator = Aggregator(public, size=num_params, params=params)
        self._unit_weights = sa.unit_weights
        self._begun: ray.ObjectRef | None = None
        self._metrics: dict[str, float] = {}
        self._screen_s = 0.0

    @property
    def decryptor_node_id(self) -> str:
        return str(ray.get(self._actor.node_id.remote()))

    def seal(self) -> None:
        """Close the decryptor's key registry once every host has enrolled its
        participants; keep their public keys to screen signatures with."""
        self.aggregator.public_keys = ray.get(self._actor.seal.remote())

    def begin_round(self, server_round: int, selected: Sequence[int]) -> None:
        self._begun = self._actor.begin_round.remote(server_round, list(selected))
        self._metrics = {}
        self._screen_s = 0.0

    def screen(self, r: FitRes | PartialAggregate | Failure,
               server_round: int) -> FitRes | PartialAggregate | Failure:
        """A received report, or the rejection of one that may not be summed."""
        if isinstance(r, PartialAggregate):
            return Failure(r.participant_ids[0], r.server_round, "rejected",
                           "plaintext partial sums are refused under secure aggregation")
        if isinstance(r, FitRes) and r.server_round == server_round:
            t0 = time.perf_counter()
            expected = 1 if self._unit_weights else r.num_examples
            problem = self.aggregator.screen(r.delta, server_round=server_round,
                                             expected_weight=expected)
            self._screen_s += time.perf_counter() - t0
            if problem is not None:
                return Failure(r.participant_id, r.server_round, "rejected",
                               f"update rejected: {problem}")
        return r

    def aggregate(self, fits: Sequence[FitRes]) -> tuple[np.ndarray, int]:
        """(Σ w_i Δ_i, Σ w_i) over ``fits``: verified, summed and opened by the decryptor."""
        updates = [cast(EncryptedUpdate, r.delta) for r in fits]
        server_round = fits[0].server_round
        t0 = time.perf_counter()
        if self._begun is not None:
            ray.get(self._begun)
        total, weight, timings = ray.get(self._actor.decrypt_aggregate.remote(
            server_round, [u.participant_id for u in updates], updates))
        call_s = time.perf_counter() - t0
        encrypt_s = [u.encrypt_seconds for u in updates]
        self._metrics = {
            "secure_agg_ciphertext_bytes": float(sum(u.ciphertext_bytes for u in updates)),
            "secure_agg_ciphertexts": float(sum(len(u.chunks) for u in updates)),
            "secure_agg_encrypt_seconds": float(sum(encrypt_s)),
            "secure_agg_encrypt_seconds_max": float(max(encrypt_s)),
            "secure_agg_sign_seconds": float(sum(u.sign_seconds for u in updates)),
            "secure_agg_screen_seconds": self._screen_s,
            "secure_agg_verify_seconds": float(timings["verify"]),
            "secure_agg_aggregate_seconds": float(timings["parse"] + timings["sum"]),
            "secure_agg_decrypt_seconds": float(timings["decrypt"]),
            "secure_agg_decrypt_call_seconds": call_s,
        }
        return total, int(weight)

    def metrics(self) -> dict[str, float]:
        """This round's secure-aggregation metrics (empty if it aborted)."""
        return dict(self._metrics)

    def close(self) -> None:
        ray.kill(self._actor, no_restart=True)
