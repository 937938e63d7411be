"""The makespan lower bound: hand-computed cases and the exact optimum as an oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfed.offload.bounds import exact_makespan, fluid_makespan, makespan_lower_bound


def test_fluid_bound_splits_work_in_proportion_to_speed():
    # 6 unit tasks; device 0 takes 1 s each, device 1 takes 2 s each.
    # Rates 1 + 0.5 task/s -> 6 / 1.5 = 4 s.
    assert fluid_makespan(np.array([6]), np.array([[1.0, 2.0]])) == pytest.approx(4.0)
    # A kind that cannot run on device 1 (inf) loads device 0 alone.
    assert fluid_makespan(np.array([3]), np.array([[1.0, np.inf]])) == pytest.approx(3.0)


def test_bound_uses_late_arrivals_and_per_task_latency():
    proc = np.array([[1.0, 1.0]])
    # Two tasks at t=0, two more at t=10: the suffix at t=10 needs 10 + 1.
    arrival = np.array([0.0, 0.0, 10.0, 10.0])
    kind = np.zeros(4, dtype=int)
    lb = makespan_lower_bound(arrival, kind, proc, min_latency_s=np.ones(4))
    assert lb == pytest.approx(11.0)
    assert exact_makespan(arrival, kind, proc) == pytest.approx(11.0)
    # A transfer of 4 s on the last task's only path dominates.
    lat = np.array([1.0, 1.0, 1.0, 5.0])
    assert makespan_lower_bound(arrival, kind, proc, lat) == pytest.approx(15.0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(1, 3), k=st.integers(1, 3),
       seed=st.integers(0, 10_000))
def test_bound_never_exceeds_the_exact_optimum(n, d, k, seed):
    rng = np.random.default_rng(seed)
    proc = rng.uniform(0.1, 3.0, size=(k, d))
    arrival = np.sort(rng.uniform(0, 4, size=n))
    kind = rng.integers(0, k, size=n)
    min_lat = proc[kind].min(axis=1)
    lb = makespan_lower_bound(arrival, kind, proc, min_lat)
    assert lb <= exact_makespan(arrival, kind, proc) + 1e-9
    assert lb >= min_lat.max()  # at least the per-task bound
