"""Round decisions: selection, per-participant seeds, and the accept/abort rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfed.fl.rounds import decide, participant_seed, select_participants
from rayfed.types import Failure, FitRes, PartialAggregate


def fit_res(pid: int, server_round: int = 3, *, value: float = 1.0, n: int = 10) -> FitRes:
    delta = np.full(4, value, dtype=np.float32)
    return FitRes(pid, server_round, delta, num_examples=n, payload_bytes=16)


def partial(pids: tuple[int, ...], server_round: int = 3, *,
            value: float = 1.0) -> PartialAggregate:
    n = tuple(10 for _ in pids)
    return PartialAggregate(server_round, pids, n, np.full(4, value * sum(n)), payload_bytes=32,
                            train_loss_sum=0.0)


def ids(results: Sequence[FitRes | PartialAggregate | Failure]) -> list[int]:
    out: list[int] = []
    for r in results:
        out += list(r.participant_ids) if isinstance(r, PartialAggregate) else [r.participant_id]
    return out


def test_all_selected_reports_are_accepted() -> None:
    d = decide([fit_res(1), fit_res(4), fit_res(7)], server_round=3, selected=[1, 4, 7],
               min_clients=3)
    assert d.proceed
    assert ids(d.accepted) == [1, 4, 7]
    assert d.rejected == ()
    assert d.reason == "3 of 3 reported"


def test_replayed_update_is_accepted_once() -> None:
    first, replay = fit_res(2, value=1.0), fit_res(2, value=5.0)
    d = decide([first, replay, fit_res(5)], server_round=3, selected=[2, 5], min_clients=1)
    assert ids(d.accepted) == [2, 5]
    assert d.accepted[0] is first  # the first arrival wins; the replay is dropped
    assert len(d.rejected) == 1
    assert d.rejected[0].participant_id == 2
    assert d.rejected[0].kind == "error"
    assert "duplicate" in d.rejected[0].reason


def test_stale_round_is_rejected_as_late() -> None:
    d = decide([fit_res(1, server_round=2), fit_res(2, server_round=3)], server_round=3,
               selected=[1, 2], min_clients=1)
    assert ids(d.accepted) == [2]
    (late,) = d.rejected
    assert (late.participant_id, late.server_round, late.kind) == (1, 2, "late")
    assert "round 2" in late.reason and "round 3" in late.reason


def test_late_update_does_not_block_the_current_one_from_same_participant() -> None:
    d = decide([fit_res(1, server_round=2), fit_res(1, server_round=3)], server_round=3,
               selected=[1], min_clients=1)
    (only,) = d.accepted
    assert isinstance(only, FitRes)
    assert (only.participant_id, only.server_round) == (1, 3)
    assert [f.kind for f in d.rejected] == ["late"]


def test_update_from_unselected_participant_is_rejected() -> None:
    d = decide([fit_res(1), fit_res(9)], server_round=3, selected=[1, 2], min_clients=1)
    assert ids(d.accepted) == [1]
    (bad,) = d.rejected
    assert (bad.participant_id, bad.kind) == (9, "error")
    assert "not selected" in bad.reason


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_delta_is_rejected(value: float) -> None:
    d = decide([fit_res(1, value=value), fit_res(2)], server_round=3, selected=[1, 2],
               min_clients=1)
    assert ids(d.accepted) == [2]
    assert ids(d.rejected) == [1]
    assert "non-finite" in d.rejected[0].reason


def test_update_with_no_examples_is_rejected() -> None:
    d = decide([fit_res(1, n=0), fit_res(2)], server_round=3, selected=[1, 2], min_clients=1)
    assert ids(d.accepted) == [2]
    assert ids(d.rejected) == [1]


def test_failures_are_passed_through_as_rejected() -> None:
    crash = Failure(4, 3, "crash", "actor died")
    d = decide([crash, fit_res(1)], server_round=3, selected=[1, 4], min_clients=1)
    assert d.proceed
    assert d.rejected == (crash,)
    assert d.reason == "1 of 2 reported"


def test_below_quorum_aborts_naming_min_clients() -> None:
    results: list[FitRes | PartialAggregate | Failure] = [
        fit_res(1), Failure(2, 3, "timeout", "slow"), fit_res(3, server_round=1)]
    d = decide(results, server_round=3, selected=[1, 2, 3], min_clients=2)
    assert not d.proceed
    assert "fl.min_clients=2" in d.reason
    assert "1 of 3" in d.reason
    assert "aborted" in d.reason
    # What was valid is still reported, so the caller can log it.
    assert ids(d.accepted) == [1]
    assert len(d.rejected) == 2


def test_exactly_quorum_proceeds() -> None:
    d = decide([fit_res(1), fit_res(2)], server_round=3, selected=[1, 2, 3], min_clients=2)
    assert d.proceed


@settings(max_examples=50, deadline=None)
@given(st.permutations(list(range(8))))
def test_accepted_is_sorted_by_participant_regardless_of_arrival(order: list[int]) -> None:
    results: list[FitRes | PartialAggregate | Failure] = [
        fit_res(pid, value=float(pid)) for pid in order]
    d = decide(results, server_round=3, selected=list(range(8)), min_clients=1)
    assert ids(d.accepted) == list(range(8))
    assert [float(r.delta[0]) for r in d.accepted if isinstance(r, FitRes)] == [
        float(i) for i in range(8)]


def test_partial_aggregate_is_accepted_whole_and_counts_each_participant() -> None:
    p = partial((2, 5, 6))
    d = decide([fit_res(7), p], server_round=3, selected=[2, 5, 6, 7], min_clients=4)
    assert d.proceed
    assert d.reason == "4 of 4 reported"
    # The partial sum appears once, ordered by its smallest participant id.
    assert len(d.accepted) == 2
    assert d.accepted[0] is p
    assert ids(d.accepted) == [2, 5, 6, 7]


def test_partial_aggregate_quorum_counts_participants_not_reports() -> None:
    d = decide([partial((1, 2))], server_round=3, selected=[1, 2, 3], min_clients=3)
    assert not d.proceed
    assert "2 of 3" in d.reason and "fl.min_clients=3" in d.reason


def test_partial_overlapping_an_accepted_update_is_rejected_whole() -> None:
    d = decide([fit_res(2), partial((2, 3))], server_round=3, selected=[2, 3], min_clients=1)
    assert ids(d.accepted) == [2]
    assert sorted(f.participant_id for f in d.rejected) == [2, 3]
    assert all(f.kind == "error" and "duplicate" in f.reason for f in d.rejected)


def test_update_replaying_a_partial_member_is_rejected() -> None:
    d = decide([partial((2, 3)), fit_res(3)], server_round=3, selected=[2, 3], min_clients=1)
    assert ids(d.accepted) == [2, 3]
    assert isinstance(d.accepted[0], PartialAggregate)
    assert [(f.participant_id, f.kind) for f in d.rejected] == [(3, "error")]


@pytest.mark.parametrize(("report", "kind"), [
    (partial((1, 2), server_round=2), "late"),
    (partial((1, 9)), "error"),           # 9 was not selected
    (partial((1, 1)), "error"),           # the same participant twice in one sum
    (partial((1, 2), value=np.nan), "error"),
], ids=["late", "unselected", "internal_duplicate", "non_finite"])
def test_bad_partial_is_rejected_for_each_member(report: PartialAggregate, kind: str) -> None:
    d = decide([report], server_round=3, selected=[1, 2], min_clients=1)
    assert not d.proceed
    assert d.accepted == ()
    assert [f.participant_id for f in d.rejected] == list(report.participant_ids)
    assert {f.kind for f in d.rejected} == {kind}


def test_select_participants_is_deterministic_distinct_and_sorted() -> None:
    a = select_participants(np.random.default_rng(7), num_clients=100, k=10)
    b = select_participants(np.random.default_rng(7), num_clients=100, k=10)
    c = select_participants(np.random.default_rng(8), num_clients=100, k=10)
    assert a == b
    assert a != c
    assert len(set(a)) == 10
    assert a == sorted(a)
    assert all(isinstance(i, int) and 0 <= i < 100 for i in a)


def test_select_everyone_returns_every_id() -> None:
    assert select_participants(np.random.default_rng(0), num_clients=5, k=5) == [0, 1, 2, 3, 4]


def test_selection_is_roughly_uniform() -> None:
    rng = np.random.default_rng(0)
    counts = np.zeros(10)
    for _ in range(2000):
        counts[select_participants(rng, num_clients=10, k=3)] += 1
    # Each id is expected 600 times; sd ~ sqrt(2000 * 0.3 * 0.7) ~ 20.5, so +-100 is ~5 sd.
    assert np.all(np.abs(counts - 600) < 100), counts


def test_participant_seed_depends_only_on_seed_round_and_id() -> None:
    s = participant_seed(0, 3, 5)
    assert s == participant_seed(0, 3, 5)
    others = {participant_seed(1, 3, 5), participant_seed(0, 4, 5), participant_seed(0, 3, 6)}
    assert s not in others
    assert len(others) == 3
    # The same triple after unrelated global RNG use still gives the same seed.
    np.random.seed(123)
    np.random.rand(10)
    assert participant_seed(0, 3, 5) == s
    assert 0 <= s < 2**32  # fits torch.Generator.manual_seed


def test_participant_seed_does_not_collide_over_a_grid() -> None:
    seeds = {participant_seed(0, r, p) for r in range(1, 51) for p in range(100)}
    assert len(seeds) == 50 * 100
