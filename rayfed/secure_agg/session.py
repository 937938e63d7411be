"""Secure aggregation in the round loop: the Ray edge of ``rayfed.secure_agg``.

One :class:`KeyAuthorityActor` per run makes the CKKS keys and is also the
decryptor, so the secret key lives in that process and in the participants'
hosts only. It is placed through ``secure_agg.decryptor_resources`` or, when the
cluster has another node, away from the server's node. The server process
(:class:`SecureAggregation`) holds:

* the public context (the aggregator refuses a private one);
* a *reference* to the participants' key material, which Ray resolves inside
  each participant host; this process never fetches it.

Per round: ``begin_round`` announces the selection to the decryptor; ``screen``
turns a foreign-key or stale ciphertext into that participant's failure;
``aggregate`` sums the survivors' ciphertexts and asks the decryptor to open
that sum, and only that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayfed.secure_agg.ciphertexts import EncryptedAggregate, EncryptedUpdate
from rayfed.secure_agg.config import SecureAggPlan
from rayfed.secure_agg.keys import KeyAuthority, KeyBundle
from rayfed.secure_agg.params import CKKSParams
from rayfed.secure_agg.roles import Aggregator, Decryptor
from rayfed.types import Failure, FitRes, PartialAggregate

log = logging.getLogger(__name__)


class KeyAuthorityActor:
    """Ray actor: the run's key authority, which is also its decryptor."""

    def __init__(self, params: CKKSParams, min_participants: int, noise_std: float) -> None:
        self._authority = KeyAuthority(params)
        # Flooding noise must be unpredictable to the aggregator: OS entropy.
        self._decryptor = Decryptor(self._authority.secret_bundle(),
                                    min_participants=min_participants, noise_std=noise_std,
                                    rng=np.random.default_rng())

    def public_bundle(self) -> KeyBundle:
        return self._authority.public_bundle()

    def participant_materials(self) -> dict[str, KeyBundle]:
        return {"encrypt": self._authority.secret_bundle()}

    def begin_round(self, server_round: int, selected: list[int]) -> None:
        self._decryptor.begin_round(server_round, selected)

    def decrypt_aggregate(self, server_round: int, participant_ids: list[int],
                          aggregate: EncryptedAggregate) -> tuple[np.ndarray, float]:
        return self._decryptor.decrypt_aggregate(server_round, participant_ids, aggregate)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def decryptor_options(sa: SecureAggPlan) -> dict[str, Any]:
    """Where the key authority runs: on ``decryptor_resources`` if the cluster has
    them, else on a node other than the server's if there is one."""
    # No CPU reserved: it decrypts one sum per round and must not take a slot
    # from the participants (a 2-CPU test cluster would otherwise stall).
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
    wanted = dict(sa.decryptor_resources)
    if wanted:
        have = ray.cluster_resources()
        keep = {k: v for k, v in wanted.items() if have.get(k, 0) >= v}
        if len(keep) < len(wanted):
            missing = sorted(set(wanted) - set(keep))
            log.warning("cluster lacks secure_agg.decryptor_resources %s; the decryptor "
                        "runs wherever Ray puts it", missing)
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
        self._actor: Any = actor_cls.remote(params, sa.min_participants, sa.decrypt_noise_std)
        # A reference only: Ray hands the value to each participant host. Held for
        # the whole run, so that a restarted host can read it again.
        self.materials: ray.ObjectRef = self._actor.participant_materials.remote()
        self.aggregator = Aggregator(ray.get(self._actor.public_bundle.remote()),
                                     size=num_params, slots=params.slots)
        self._begun: ray.ObjectRef | None = None
        self._metrics: dict[str, float] = {}

    @property
    def decryptor_node_id(self) -> str:
        return str(ray.get(self._actor.node_id.remote()))

    def begin_round(self, server_round: int, selected: Sequence[int]) -> None:
        self._begun = self._actor.begin_round.remote(server_round, list(selected))
        self._metrics = {}

    def screen(self, r: FitRes | PartialAggregate | Failure,
               server_round: int) -> FitRes | PartialAggregate | Failure:
        """A received report, or the failure value of one that may not be summed."""
        if isinstance(r, PartialAggregate):
            return Failure(r.participant_ids[0], r.server_round, "error",
                           "plaintext partial sums are refused under secure aggregation")
        if isinstance(r, FitRes) and r.server_round == server_round:
            problem = self.aggregator.screen(r.delta, server_round=server_round)
            if problem is not None:
                return Failure(r.participant_id, r.server_round, "error", problem)
        return r

    def aggregate(self, fits: Sequence[FitRes]) -> tuple[np.ndarray, int]:
        """(Σ w_i Δ_i, Σ w_i) over ``fits``: summed encrypted, opened by the decryptor."""
        updates = [cast(EncryptedUpdate, r.delta) for r in fits]
        server_round = fits[0].server_round
        t0 = time.perf_counter()
        aggregate = self.aggregator.aggregate(updates, server_round=server_round)
        t1 = time.perf_counter()
        if self._begun is not None:
            ray.get(self._begun)
        total, decrypt_s = ray.get(self._actor.decrypt_aggregate.remote(
            server_round, list(aggregate.participant_ids), aggregate))
        t2 = time.perf_counter()
        encrypt_s = [u.encrypt_seconds for u in updates]
        self._metrics = {
            "secure_agg_ciphertext_bytes": float(sum(u.ciphertext_bytes for u in updates)),
            "secure_agg_ciphertexts": float(sum(len(u.chunks) for u in updates)),
            "secure_agg_encrypt_seconds": float(sum(encrypt_s)),
            "secure_agg_encrypt_seconds_max": float(max(encrypt_s)),
            "secure_agg_aggregate_seconds": t1 - t0,
            "secure_agg_decrypt_seconds": float(decrypt_s),
            "secure_agg_decrypt_call_seconds": t2 - t1,
        }
        return total, aggregate.total_weight

    def metrics(self) -> dict[str, float]:
        """This round's secure-aggregation metrics (empty if it aborted)."""
        return dict(self._metrics)

    def close(self) -> None:
        ray.kill(self._actor, no_restart=True)
