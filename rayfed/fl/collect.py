"""Collecting a round's results from the actors under a deadline (the Ray edge of a round).

A call still running at the deadline is kept as *stale* (hosts start no new
participant after the deadline); when it finishes in a later round its updates
carry the old round id and :func:`rayfed.fl.rounds.decide` rejects them as late.
A dead actor or a failed host becomes :class:`~rayfed.types.Failure` values.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from rayfed.fl.placement import Pending
from rayfed.fl.rounds import num_participants
from rayfed.types import Failure, FailureKind, FitRes, PartialAggregate


def fetch(p: Pending) -> list[Any]:
    """Resolve one call; a dead actor or a failed host becomes Failure values."""
    kind: FailureKind
    try:
        return list(ray.get(p.ref))
    except ray.exceptions.RayActorError as exc:
        kind, reason = "crash", f"participant actor died: {str(exc).splitlines()[0]}"
    except ray.exceptions.RayTaskError as exc:
        kind, reason = "error", f"participant host failed: {str(exc).splitlines()[0]}"
    return [Failure(pid, p.server_round, kind, reason) for pid in p.participant_ids]


class Collector:
    """Waits for each round's calls until the deadline; remembers the stragglers."""

    def __init__(self, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._stale: list[Pending] = []

    def collect(self, pending: list[Pending], server_round: int
                ) -> tuple[list[FitRes | PartialAggregate | Failure], int]:
        """This round's results (and late ones that arrived meanwhile), and how many
        participants' updates were late."""
        deadline = time.monotonic() + self.timeout_s
        results: list[FitRes | PartialAggregate | Failure] = []
        num_late = 0
        if self._stale:
            ready, _ = ray.wait([p.ref for p in self._stale], num_returns=len(self._stale),
                                timeout=0)
            done = set(ready)
            for p in self._stale:
                if p.ref in done:
                    late = [r for r in fetch(p) if not isinstance(r, Failure)]
                    num_late += sum(num_participants(r) for r in late)
                    results.extend(late)
            self._stale = [p for p in self._stale if p.ref not in done]
        by_ref = {p.ref: p for p in pending}
        remaining = list(by_ref)
        while remaining:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            ready, remaining = ray.wait(remaining, num_returns=1, timeout=timeout)
            for ref in ready:
                results.extend(fetch(by_ref[ref]))
        for ref in remaining:
            p = by_ref[ref]
            self._stale.append(p)
            results.extend(Failure(pid, server_round, "timeout",
                                   f"no update within fl.round_timeout_s={self.timeout_s}")
                           for pid in p.participant_ids)
        return results, num_late
