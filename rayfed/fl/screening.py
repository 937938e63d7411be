"""Screening of reported updates before aggregation (issue #9, I2).

An update is one flat float32 vector of the model's size, so the checks are:
its dtype, that it is one-dimensional, its length (a missing or an extra tensor
changes it), finite values, ``0 < num_examples ≤`` the participant's shard size,
and an L2 norm at most ``norm_ratio`` (1000) times the median norm of the round's
other well-formed updates. A rejected update becomes a ``Failure(kind="rejected")``
value naming the reason; it never raises and never reaches the reducer.

Without secure aggregation nothing else passes: a list, a tensor or any other
object is rejected, never treated as opaque. Under secure aggregation updates
are ciphertexts, parsed and checked by the session before they get here; only
``num_examples`` can be checked here, and norms cannot be seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rayfed.types import Failure, FitRes, PartialAggregate

NORM_RATIO = 1000.0


@dataclass(frozen=True)
class UpdateSpec:
    """What a well-formed update of this run looks like."""

    num_params: int
    # Each participant's training examples, as its host reported them at start-up;
    # a participant missing here is only checked for num_examples > 0.
    shard_sizes: Mapping[int, int] = field(default_factory=dict)
    norm_ratio: float = NORM_RATIO
    # Under secure aggregation an update is a ciphertext, parsed and checked by
    # the secure-aggregation session; without it only a float32 array passes.
    encrypted: bool = False


def vector_problem(delta: object, *, num_params: int,
                   dtype: type[np.floating] = np.float32) -> str | None:
    """Why ``delta`` is not a finite flat vector of ``num_params`` values, or None."""
    if not isinstance(delta, np.ndarray):
        return (f"a {type(delta).__name__}, expected a float32 numpy array of "
                f"{num_params} values")
    if delta.dtype != dtype:
        return f"dtype {delta.dtype}, expected {np.dtype(dtype).name}"
    if delta.ndim != 1:
        return f"shape {delta.shape}, expected a flat vector ({num_params},)"
    if delta.size != num_params:
        return (f"{delta.size} values, expected {num_params} (a missing or extra tensor)")
    bad = int(delta.size - np.count_nonzero(np.isfinite(delta)))
    if bad:
        return f"{bad} non-finite values (NaN or Inf)"
    return None


def examples_problem(num_examples: object, shard_size: int | None) -> str | None:
    """Why ``num_examples`` cannot be this participant's, or None."""
    if not isinstance(num_examples, int | np.integer) or isinstance(num_examples, bool):
        return f"num_examples={num_examples!r} is not an integer"
    if num_examples <= 0:
        return f"num_examples={num_examples} must be > 0"
    if shard_size is not None and num_examples > shard_size:
        return f"num_examples={num_examples} exceeds the participant's shard ({shard_size})"
    return None


def norm_outliers(norms: Mapping[int, float], *, ratio: float) -> dict[int, str]:
    """Participants whose update norm exceeds ``ratio`` × the median norm."""
    if not norms:
        return {}
    median = float(np.median(np.fromiter(norms.values(), dtype=np.float64)))
    if median <= 0:
        return {}
    return {pid: f"update norm {n:.3g} is {n / median:.3g}× the round's median norm "
                 f"{median:.3g} (limit {ratio:g}×)"
            for pid, n in sorted(norms.items()) if n > ratio * median}


def screen(
    results: Sequence[FitRes | PartialAggregate | Failure],
    *,
    server_round: int,
    spec: UpdateSpec,
) -> list[FitRes | PartialAggregate | Failure]:
    """This round's reports with each malformed one replaced by ``rejected`` Failures.

    Reports of other rounds pass through untouched: :func:`rayfed.fl.rounds.decide`
    rejects them as late.
    """
    out: list[list[FitRes | PartialAggregate | Failure]] = [[r] for r in results]
    norms: dict[int, float] = {}
    where: dict[int, int] = {}
    for i, r in enumerate(results):
        if isinstance(r, Failure) or r.server_round != server_round:
            continue
        if isinstance(r, PartialAggregate):
            out[i] = list(_screen_partial(r, spec))
            continue
        pid = r.participant_id
        problem = (None if spec.encrypted else vector_problem(r.delta, num_params=spec.num_params))
        problem = problem or examples_problem(r.num_examples, spec.shard_sizes.get(pid))
        if problem is not None:
            out[i] = [rejected(pid, server_round, problem)]
        elif isinstance(r.delta, np.ndarray):
            norms[pid] = float(np.linalg.norm(r.delta.astype(np.float64)))
            where[pid] = i
    for pid, problem in norm_outliers(norms, ratio=spec.norm_ratio).items():
        out[where[pid]] = [rejected(pid, server_round, problem)]
    return [r for group in out for r in group]


def rejected(participant_id: int, server_round: int, problem: str) -> Failure:
    return Failure(participant_id, server_round, "rejected", f"update rejected: {problem}")


def _screen_partial(r: PartialAggregate,
                    spec: UpdateSpec) -> tuple[PartialAggregate] | tuple[Failure, ...]:
    """A partial sum was screened update by update where it was summed; here only
    its own form and the counts it claims are checked. It stands or falls whole."""
    problem = vector_problem(r.weighted_sum, num_params=spec.num_params, dtype=np.float64)
    for pid, n in zip(r.participant_ids, r.num_examples, strict=True):
        problem = problem or examples_problem(n, spec.shard_sizes.get(pid))
    if problem is None:
        return (r,)
    return tuple(rejected(pid, r.server_round, f"in a partial aggregate of "
                          f"{list(r.participant_ids)}: {problem}")
                 for pid in r.participant_ids)
