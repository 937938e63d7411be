"""The pure decisions of a round: whom to select and whether to accept.

Nothing here touches Ray, so the rules are tested without a cluster.
"""

from __future__ import annotations

import numpy as np

from rayfed.types import Failure, FailureKind, FitRes, PartialAggregate, RoundDecision


def select_participants(rng: np.random.Generator, *, num_clients: int, k: int) -> list[int]:
    """Uniformly sample ``k`` distinct participants (sorted for determinism)."""
    return sorted(int(i) for i in rng.choice(num_clients, size=k, replace=False))


def participant_seed(seed: int, server_round: int, participant_id: int) -> int:
    """Seed of one participant's local randomness in one round.

    It depends on (seed, round, participant) only, not on which actor serves the
    participant, so pooled and dedicated placements train identically.
    """
    return int(np.random.SeedSequence([seed, server_round, participant_id]).generate_state(1)[0])


def num_participants(report: FitRes | PartialAggregate) -> int:
    return len(report.participant_ids) if isinstance(report, PartialAggregate) else 1


def decide(
    results: list[FitRes | PartialAggregate | Failure],
    *,
    server_round: int,
    selected: list[int],
    min_clients: int,
) -> RoundDecision:
    """Accept each selected participant's update at most once, for this round only.

    Rejected: updates from other rounds (late or replayed), from participants not
    selected, duplicates, and updates with non-finite values. The round proceeds
    only if at least ``min_clients`` updates were accepted.
    """
    chosen = set(selected)
    accepted: dict[int, FitRes | PartialAggregate] = {}
    rejected: list[Failure] = []
    for r in results:
        if isinstance(r, Failure):
            rejected.append(r)
            continue
        if isinstance(r, PartialAggregate):
            _accept_partial(r, server_round, chosen, accepted, rejected)
            continue
        pid = r.participant_id
        if r.server_round != server_round:
            rejected.append(Failure(pid, r.server_round, "late",
                                    f"update for round {r.server_round} arrived in round "
                                    f"{server_round}"))
        elif pid not in chosen:
            rejected.append(Failure(pid, server_round, "error",
                                    "update from a participant not selected this round"))
        elif pid in accepted:
            rejected.append(Failure(pid, server_round, "error",
                                    "duplicate update ignored (accepted at most once)"))
        elif r.num_examples <= 0 or not _finite(r.delta):
            rejected.append(Failure(pid, server_round, "error",
                                    "update rejected: no examples or non-finite values"))
        else:
            accepted[pid] = r
    unique: dict[int, FitRes | PartialAggregate] = {}
    for pid in sorted(accepted):  # a partial sum appears once, at its first id
        unique.setdefault(id(accepted[pid]), accepted[pid])
    ordered = tuple(unique.values())
    reported = len(accepted)
    if reported < min_clients:
        reason = (f"round {server_round} aborted: {reported} of {len(selected)} selected "
                  f"participants reported, below the quorum fl.min_clients={min_clients}; "
                  "the global model is unchanged")
        return RoundDecision(False, reason, ordered, tuple(rejected))
    return RoundDecision(True, f"{reported} of {len(selected)} reported", ordered,
                         tuple(rejected))


def _finite(delta: object) -> bool:
    """Non-finite values are rejected; an encrypted update cannot be inspected here
    (its encrypt stage refuses non-finite values before encrypting)."""
    return not isinstance(delta, np.ndarray) or bool(np.isfinite(delta).all())


def _accept_partial(
    r: PartialAggregate,
    server_round: int,
    chosen: set[int],
    accepted: dict[int, FitRes | PartialAggregate],
    rejected: list[Failure],
) -> None:
    """A partial sum is accepted whole or not at all: it cannot be split."""
    ids = r.participant_ids
    problem = None
    kind: FailureKind = "error"
    if r.server_round != server_round:
        kind, problem = "late", (f"partial aggregate for round {r.server_round} arrived in "
                                 f"round {server_round}")
    elif not set(ids) <= chosen:
        kind, problem = "error", "partial aggregate includes participants not selected"
    elif any(pid in accepted for pid in ids) or len(set(ids)) != len(ids):
        kind, problem = "error", "duplicate updates in partial aggregate ignored"
    elif not np.isfinite(r.weighted_sum).all():
        kind, problem = "error", "partial aggregate rejected: non-finite values"
    if problem is not None:
        rejected.extend(Failure(pid, r.server_round, kind, problem) for pid in ids)
        return
    for pid in ids:
        accepted[pid] = r
