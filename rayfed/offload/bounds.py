"""A lower bound on the makespan of a task stream, and the exact optimum for tiny ones.

Scheduling with release times on unrelated machines (``R|r_j|C_max``) is NP-hard,
so policies are compared against a relaxation. Two bounds hold for any schedule:

* **per task**: task ``j`` cannot finish before ``r_j + min_d latency_jd``;
* **suffix fluid (LP) bound**: the tasks released at or after ``r_k`` all run in
  ``[r_k, C_max]``. Letting them split fractionally across devices (the LP
  relaxation of Lenstra, Shmoys & Tardos 1990) gives
  ``C_max >= r_k + LP_k``, where ``LP_k = min T`` s.t. each task is fully
  assigned and every device's assigned processing time is at most ``T``.
  Tasks of one kind are interchangeable, so the LP has one variable per
  (kind, device) and stays tiny.

The bound is the maximum over both, with times measured from the first arrival.
:func:`exact_makespan` enumerates every assignment (each device runs its tasks in
release order, which is optimal for ``1|r_j|C_max``) and is the oracle in tests.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog


def fluid_makespan(counts: np.ndarray, proc_s: np.ndarray) -> float:
    """``min T`` with ``counts[k]`` tasks of kind ``k``, ``proc_s[k, d]`` each on device ``d``
    (``inf`` where it cannot run), split fractionally."""
    kinds, devices = proc_s.shape
    active = [k for k in range(kinds) if counts[k] > 0]
    if not active:
        return 0.0
    allowed = [(k, d) for k in active for d in range(devices) if np.isfinite(proc_s[k, d])]
    nvar = len(allowed) + 1  # the last variable is T
    c = np.zeros(nvar)
    c[-1] = 1.0
    a_eq = np.zeros((len(active), nvar))
    b_eq = np.array([float(counts[k]) for k in active])
    a_ub = np.zeros((devices, nvar))
    for v, (k, d) in enumerate(allowed):
        a_eq[active.index(k), v] = 1.0
        a_ub[d, v] = proc_s[k, d]
    a_ub[:, -1] = -1.0
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(devices), A_eq=a_eq, b_eq=b_eq,
                  bounds=[(0, None)] * nvar, method="highs")
    if not res.success:
        raise ValueError(f"makespan LP failed: {res.message}; is some task kind unable "
                         "to run on every device?")
    return float(res.x[-1])


def makespan_lower_bound(arrival_s: np.ndarray, kind: np.ndarray, proc_s: np.ndarray,
                         min_latency_s: np.ndarray, *, max_suffixes: int = 200) -> float:
    """Lower bound on the makespan (first arrival to last completion).

    ``kind[j]`` indexes the rows of ``proc_s``; ``min_latency_s[j]`` is task ``j``'s
    least transfer + compute over all devices. At most ``max_suffixes`` evenly
    spaced suffixes are solved (every one is a valid bound; more only tighten).
    """
    order = np.argsort(arrival_s, kind="stable")
    r = arrival_s[order] - arrival_s[order[0]]
    k = kind[order]
    per_task = float(np.max(r + min_latency_s[order]))
    n, num_kinds = len(r), proc_s.shape[0]
    suffix_counts = np.zeros((n + 1, num_kinds), dtype=np.int64)
    for j in range(n - 1, -1, -1):
        suffix_counts[j] = suffix_counts[j + 1]
        suffix_counts[j, k[j]] += 1
    starts = np.unique(np.linspace(0, n - 1, min(n, max_suffixes)).astype(int))
    fluid = max(r[j] + fluid_makespan(suffix_counts[j], proc_s) for j in starts)
    return float(max(per_task, fluid))


def exact_makespan(arrival_s: np.ndarray, kind: np.ndarray, proc_s: np.ndarray) -> float:
    """Optimal makespan by enumeration (``devices ** tasks`` assignments; tiny only)."""
    n, devices = len(arrival_s), proc_s.shape[1]
    if devices**n > 200_000:
        raise ValueError(f"exact_makespan enumerates {devices}^{n} assignments; use at most "
                         "~200k, or makespan_lower_bound")
    order = np.argsort(arrival_s, kind="stable")
    r0 = float(arrival_s[order[0]])
    best = np.inf
    for assign in itertools.product(range(devices), repeat=n):
        free = np.zeros(devices)
        for j in order:
            d = assign[j]
            free[d] = max(free[d], arrival_s[j] - r0) + proc_s[kind[j], d]
        best = min(best, float(free.max()))
    return best
