"""Where participants run: Ray actors around :class:`ParticipantHost`.

Two placements run the same participant logic:

* ``dedicated``: one actor per participant (cross-silo). Each actor builds only
  its own shard; actor options, custom resources included, come from the config.
* ``pooled``: a fixed pool of actors, each serving many virtual participants per
  call (cross-device simulation). Per-participant state travels in
  :class:`~rayfed.types.FitIns` / :class:`~rayfed.types.FitRes`, so it survives
  whichever actor serves the participant next.

This module and the orchestrator are the only parts of ``rayfed.fl`` that import
Ray.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from rayfed.data.schema import SiteSchema
from rayfed.errors import DataError, RayfedError
from rayfed.fl.config import RuntimeConfig, participant_resources
from rayfed.fl.host import ParticipantHost
from rayfed.plan import RunPlan
from rayfed.runtime import available_resources
from rayfed.types import EvalRes, Failure, FitIns, FitRes, PartialAggregate

log = logging.getLogger(__name__)


def _past(deadline_unix: float | None) -> Callable[[], bool]:
    """The host starts no new participant once the round's deadline has passed;
    what it already computed still returns, carrying its round id."""
    if deadline_unix is None:
        return lambda: False
    return lambda: time.time() > deadline_unix


class HostActor:
    """The Ray actor: a thin shell around :class:`ParticipantHost`."""

    def __init__(self, plan: RunPlan, materials: dict[str, Any] | None = None) -> None:
        self._host = ParticipantHost(plan, materials)

    # Retried while the actor restarts: the server uses it to wait for a crashed
    # participant to come back before the next round.
    @ray.method(max_task_retries=-1)
    def ready(self) -> int:
        return os.getpid()

    def fit(self, server_round: int, global_weights: np.ndarray, tasks: Sequence[FitIns],
            deadline_unix: float | None = None) -> list[FitRes | Failure]:
        return self._host.fit(server_round, global_weights, tasks,
                              should_stop=_past(deadline_unix))

    def fit_partial(self, server_round: int, global_weights: np.ndarray,
                    tasks: Sequence[FitIns],
                    deadline_unix: float | None = None) -> list[PartialAggregate | Failure]:
        return self._host.fit_partial(server_round, global_weights, tasks,
                                      should_stop=_past(deadline_unix))

    def evaluate(self, server_round: int, global_weights: np.ndarray,
                 participant_ids: Sequence[int]) -> list[EvalRes | Failure]:
        return self._host.evaluate(server_round, global_weights, participant_ids)

    def shard_sizes(self, participant_ids: Sequence[int]) -> list[int]:
        return self._host.shard_sizes(participant_ids)

    def enrol(self, participant_ids: Sequence[int]) -> None:
        self._host.enrol(participant_ids)

    def describe(self, participant_ids: Sequence[int]) -> list[SiteSchema]:
        return self._host.describe(participant_ids)


@dataclass(frozen=True)
class Pending:
    """An in-flight call and the participants whose results it will carry."""

    ref: ray.ObjectRef
    participant_ids: tuple[int, ...]
    server_round: int


def _resource_options(runtime: RuntimeConfig) -> dict[str, Any]:
    """Custom resources the config asks for, minus those the cluster lacks.

    A laptop has no ``edge`` or ``cloud`` resources; actors then fall back to
    plain CPUs and we say so once, instead of hanging unschedulable.
    """
    keep = available_resources(runtime.resources, what="runtime.resources")
    return {"resources": keep} if keep else {}


def _site_options(runtime: RuntimeConfig, index: int, options: dict[str, Any]) -> dict[str, Any]:
    """Actor ``index``'s options: with ``runtime.participant_resources`` (dedicated
    placement, actor i = participant i) it asks for its own site's resource, so it
    runs on the node holding that site's data. Unlike ``runtime.resources`` a
    missing site resource is an error, never a fallback: the data is only there."""
    site = participant_resources(runtime, index)
    if not site:
        return options
    have = ray.cluster_resources()
    missing = sorted(k for k, v in site.items() if have.get(k, 0) < v)
    if missing:
        raise RayfedError(
            f"participant {index}: no node of this cluster advertises {missing} "
            f"(runtime.participant_resources={runtime.participant_resources}); start the "
            f"node that holds site {index}'s data with --resources='{{\"{missing[0]}\": 1}}' "
            "(cluster.yaml: its node type's resources)")
    return {**options, "resources": {**options.get("resources", {}), **site}}


class ParticipantActors:
    """Actors hosting participants, and how round tasks are spread over them."""

    def __init__(self, plan: RunPlan, *, materials: dict[str, Any] | None = None) -> None:
        """``materials``: per-run stage material (``{stage name: value}``) each
        actor receives, e.g. secure aggregation's public context."""
        cfg = plan.config
        runtime = cfg.runtime
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        self.mode = runtime.placement
        if self.mode == "dedicated":
            num_cpus = runtime.actor_num_cpus or min(1.0, total_cpus / cfg.fl.num_clients)
            num_actors = cfg.fl.num_clients
        else:
            num_cpus = runtime.actor_num_cpus or 1.0
            num_actors = runtime.pool_size or max(1, int(total_cpus // num_cpus))
        options: dict[str, Any] = {
            "num_cpus": num_cpus,
            "num_gpus": runtime.num_gpus_per_actor,
            "max_restarts": runtime.max_restarts,
            # A round is never retried behind the server's back; a restarted actor
            # rejoins at the next round.
            "max_task_retries": 0,
            **_resource_options(runtime),
        }
        remote_cls = ray.remote(HostActor)
        # Hosts get the plan without the server's test set (the Python API's test_data).
        # By value, not as an object-store reference: a restarted actor needs it again.
        host_plan = plan.for_hosts()
        per_site = [_site_options(runtime, i, options) for i in range(num_actors)]
        self.actors: list[Any] = [remote_cls.options(**o).remote(host_plan, materials)
                                  for o in per_site]
        self.num_cpus_per_actor = num_cpus
        # Actors seen dying, and the `ready` call that resolves once they restarted.
        self._restarting: dict[int, ray.ObjectRef] = {}
        # Those already waited for once and still down (e.g. their node is gone and
        # no other node has room): rounds no longer wait for them.
        self._overdue: set[int] = set()
        self._actor_of: dict[int, int] = {}

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until every actor has built its shards; re-raise a start-up error
        (e.g. an impossible partition) with its cause instead of Ray's wrapper."""
        try:
            ray.get([a.ready.remote() for a in self.actors], timeout=timeout_s)
        except ray.exceptions.RayActorError as exc:
            cause = getattr(exc, "cause", None) or getattr(exc, "_cause", None)
            text = str(cause or exc)
            detail = next((ln for ln in reversed(text.splitlines()) if "Error" in ln), text)
            self.shutdown()
            raise RayfedError(f"participant actors failed to start: {detail.strip()}") from exc

    def _groups(self, participant_ids: Sequence[int]) -> list[tuple[Any, list[int]]]:
        if self.mode == "dedicated":
            index_groups = [(pid, [pid]) for pid in participant_ids]
        else:
            n = len(self.actors)
            # Sticky: a participant is always served by the same actor, which
            # builds and caches its shard once (spreading by position would make
            # every actor cache every participant over time). Selection is
            # uniform, so the actors' loads stay balanced.
            index_groups = [(i, [pid for pid in participant_ids if pid % n == i])
                            for i in range(n)]
        for i, ids in index_groups:
            self._actor_of.update(dict.fromkeys(ids, i))
        return [(self.actors[i], ids) for i, ids in index_groups if ids]

    def note_crashes(self, participant_ids: Sequence[int]) -> None:
        """Remember the actors of participants whose actor died this round."""
        for pid in participant_ids:
            i = self._actor_of.get(pid)
            if i is not None and i not in self._restarting:
                self._restarting[i] = self.actors[i].ready.remote()

    def await_restarts(self, timeout_s: float) -> None:
        """Give crashed actors up to ``timeout_s`` to restart and rebuild their shards,
        so that their participants rejoin this round rather than fail again.

        Each death is waited for once: an actor still down after its wait is only
        checked (without waiting) in later rounds, which would otherwise each pay
        ``timeout_s`` for an actor that cannot come back, e.g. after its node left."""
        if not self._restarting:
            return
        new = [r for i, r in self._restarting.items() if i not in self._overdue]
        if new:
            ray.wait(new, num_returns=len(new), timeout=timeout_s)
        refs = list(self._restarting.values())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        self._restarting = {i: r for i, r in self._restarting.items() if r not in done}
        self._overdue = set(self._restarting)

    def submit_fit(self, server_round: int, weights_ref: ray.ObjectRef,
                   tasks: Sequence[FitIns], *, deadline_unix: float | None = None,
                   aggregate_locally: bool = False) -> list[Pending]:
        """One call per actor. With ``aggregate_locally`` (pooled placement and a
        linear reducer) each actor returns the sum of its participants' updates."""
        by_id = {t.participant_id: t for t in tasks}
        pending = []
        local = aggregate_locally and self.mode == "pooled"
        for actor, ids in self._groups([t.participant_id for t in tasks]):
            method = actor.fit_partial if local else actor.fit
            ref = method.remote(server_round, weights_ref, [by_id[i] for i in ids],
                                deadline_unix)
            pending.append(Pending(ref, tuple(ids), server_round))
        return pending

    def submit_evaluate(self, server_round: int, weights_ref: ray.ObjectRef,
                        participant_ids: Sequence[int]) -> list[Pending]:
        return [Pending(actor.evaluate.remote(server_round, weights_ref, ids), tuple(ids),
                        server_round)
                for actor, ids in self._groups(list(participant_ids))]

    def shard_sizes(self, participant_ids: Sequence[int]) -> dict[int, int]:
        """Each participant's number of training examples, asked of its host once
        (the server screens the ``num_examples`` updates claim against it)."""
        groups = self._groups(list(participant_ids))
        sizes = ray.get([actor.shard_sizes.remote(ids) for actor, ids in groups])
        return {pid: n for (_, ids), ns in zip(groups, sizes, strict=True)
                for pid, n in zip(ids, ns, strict=True)}

    def enrol(self, participant_ids: Sequence[int]) -> None:
        """Secure aggregation: each actor makes the signing keys of the participants
        it serves and registers them with the decryptor (the keys stay there)."""
        ray.get([actor.enrol.remote(ids) for actor, ids in self._groups(list(participant_ids))])

    def describe(self, participant_ids: Sequence[int]) -> list[SiteSchema]:
        """Each participant's own description of its data, made in its own actor."""
        groups = self._groups(list(participant_ids))
        reports = ray.get([actor.describe.remote(ids) for actor, ids in groups])
        return [s for rs in reports for s in rs]

    def check_sites(self, participant_ids: Sequence[int],
                    input_shape: tuple[int, ...] | None) -> None:
        """Raise one :class:`DataError` listing every site's problem before round 1:
        missing or unreadable files, undeclared columns or labels, sites that differ
        from each other, and shapes that differ from the model's."""
        from rayfed.data.schema import site_mismatches

        schemas = self.describe(participant_ids)
        problems = [p for s in schemas for p in s.problems]
        ok = [s for s in schemas if not s.problems]
        problems += site_mismatches(ok)
        if input_shape is not None:
            problems += [f"{s.where} has inputs of shape {s.input_shape}, but the model was "
                         f"built for {input_shape} (from the dataset declaration); fix the "
                         "file or the declaration" for s in ok if s.input_shape != input_shape]
        if problems:
            self.shutdown()
            raise DataError("the sites' data cannot be used; nothing was trained:\n"
                            + "\n".join(f"  - {p}" for p in problems))

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
