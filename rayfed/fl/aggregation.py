"""One aggregation object per run, with paired verbs: ``partial`` and ``finish``.

* :meth:`Aggregation.admit` turns a round's received reports into the ones that
  may be aggregated: each update decoded through the wire stages (or, under
  secure aggregation, parsed as a ciphertext) and screened; anything malformed
  becomes that participant's ``Failure(kind="rejected")``.
* :meth:`Aggregation.partial` sums a group of admitted updates where they ran
  (a pooled actor, or the server itself), as pfl-research's workers do.
* :meth:`Aggregation.finish` turns the round's partial sums and single updates
  into the update Δ that the server optimizer applies.

Which implementation runs is the plan's aggregation mode (``rayfed.plan``): the
weighted mean (McMahan et al. 2017), DP-FedAvg's noised sum over a fixed
denominator (McMahan et al. 2018), a robust reducer over individual updates,
or either linear mode summed under CKKS and opened by the decryptor. The
weighted sum itself is one function, :func:`rayfed.strategies.weighted_sum`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from rayfed.errors import AggregationError
from rayfed.fl.screening import UpdateSpec, rejected, screen
from rayfed.stages import Pipeline
from rayfed.strategies import Strategy, weighted_sum
from rayfed.types import Failure, FitRes, PartialAggregate

Report = FitRes | PartialAggregate | Failure
# DP-FedAvg's release: Σ clip(Δ_i) -> noised mean over the fixed denominator.
Release = Callable[[np.ndarray], np.ndarray]


class Aggregation(Protocol):
    # What participant hosts need to encode for this aggregation (public only).
    materials: dict[str, Any] | None

    def enrol(self, placement: Any, participant_ids: Sequence[int]) -> None: ...

    def begin_round(self, server_round: int, selected: Sequence[int]) -> None: ...

    def admit(self, results: Sequence[Report], *, server_round: int,
              spec: UpdateSpec) -> list[Report]: ...

    def partial(self, fits: Sequence[FitRes], *, server_round: int) -> PartialAggregate: ...

    def finish(self, accepted: Sequence[FitRes | PartialAggregate], *,
               num_params: int) -> np.ndarray: ...

    def metrics(self) -> dict[str, float]: ...

    def close(self) -> None: ...


def _weight(r: FitRes, unit_weights: bool) -> float:
    return 1.0 if unit_weights else float(r.num_examples)


class PlainAggregation:
    """Plaintext updates: the weighted mean, DP-FedAvg, or a robust reducer."""

    def __init__(self, pipeline: Pipeline, *, unit_weights: bool = False,
                 release: Release | None = None, strategy: Strategy | None = None,
                 robust: bool = False) -> None:
        self.pipeline = pipeline
        self.unit_weights = unit_weights
        self.release = release
        self.strategy = strategy
        self.robust = robust
        self.materials: dict[str, Any] | None = None

    def enrol(self, placement: Any, participant_ids: Sequence[int]) -> None:
        pass

    def begin_round(self, server_round: int, selected: Sequence[int]) -> None:
        pass

    def admit(self, results: Sequence[Report], *, server_round: int,
              spec: UpdateSpec) -> list[Report]:
        return screen([self._decode(r) for r in results], server_round=server_round,
                      spec=spec)

    def _decode(self, r: Report) -> Report:
        """Invert the wire stages (e.g. dequantize) for one update."""
        if not isinstance(r, FitRes) or not self.pipeline.stages:
            return r
        try:
            return replace(r, delta=self.pipeline.decode(r.delta))
        except Exception as exc:  # a malformed payload is that participant's failure
            return rejected(r.participant_id, r.server_round,
                            f"undecodable update: {type(exc).__name__}: {exc}")

    def partial(self, fits: Sequence[FitRes], *, server_round: int) -> PartialAggregate:
        if self.robust:
            raise AggregationError("a robust reducer needs every update; it has no partial sums")
        total = weighted_sum(np.stack([r.delta for r in fits]),
                             np.array([_weight(r, self.unit_weights) for r in fits]))
        metrics: dict[str, float] = {}
        for r in fits:
            for k, v in r.metrics.items():
                metrics[k] = max(v, metrics.get(k, v))
        return PartialAggregate(
            server_round, tuple(r.participant_id for r in fits),
            tuple(r.num_examples for r in fits), total,
            sum(r.payload_bytes for r in fits),
            sum(r.metrics.get("train_loss", 0.0) * r.num_examples for r in fits),
            {r.participant_id: r.state for r in fits if r.state is not None}, metrics)

    def finish(self, accepted: Sequence[FitRes | PartialAggregate], *,
               num_params: int) -> np.ndarray:
        fits = [r for r in accepted if isinstance(r, FitRes)]
        partials = [r for r in accepted if isinstance(r, PartialAggregate)]
        if self.robust:
            if partials or self.strategy is None:
                raise AggregationError("a robust reducer cannot combine partial sums")
            return self.strategy.reduce([r.delta for r in fits],
                                        [r.num_examples for r in fits], shape=(num_params,))
        # Partial sums enter with weight 1: they are Σ w_i Δ_i already.
        vectors = [p.weighted_sum for p in partials] + [r.delta for r in fits]
        weights = [1.0] * len(partials) + [_weight(r, self.unit_weights) for r in fits]
        total = weighted_sum(np.stack(vectors), np.array(weights))
        if self.release is not None:
            return self.release(total)
        n = sum(sum(p.num_examples) for p in partials) + sum(r.num_examples for r in fits)
        return (total / n).astype(np.float32)

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


class EncryptedAggregation:
    """CKKS: the aggregator sums ciphertexts, the decryptor opens only that sum."""

    def __init__(self, session: Any, *, release: Release | None = None) -> None:
        # rayfed.secure_agg.session.SecureAggregation (the Ray edge of secure_agg).
        self.session = session
        self.release = release
        self.materials: dict[str, Any] | None = session.materials

    def enrol(self, placement: Any, participant_ids: Sequence[int]) -> None:
        """Hosts register their participants' signing keys with the decryptor
        themselves (``placement.enrol``); then registration closes, before round 1."""
        placement.enrol(participant_ids)
        self.session.seal()

    def begin_round(self, server_round: int, selected: Sequence[int]) -> None:
        self.session.begin_round(server_round, selected)

    def admit(self, results: Sequence[Report], *, server_round: int,
              spec: UpdateSpec) -> list[Report]:
        parsed = [self.session.screen(r, server_round) for r in results]
        return screen(parsed, server_round=server_round, spec=replace(spec, encrypted=True))

    def partial(self, fits: Sequence[FitRes], *, server_round: int) -> PartialAggregate:
        raise AggregationError("under secure aggregation hosts send ciphertexts; plaintext "
                               "partial sums would reveal their participants' updates")

    def finish(self, accepted: Sequence[FitRes | PartialAggregate], *,
               num_params: int) -> np.ndarray:
        fits = [r for r in accepted if isinstance(r, FitRes)]
        if len(fits) != len(accepted):
            raise AggregationError("plaintext partial sums are refused under secure aggregation")
        # Σ w_i Δ_i opened by the decryptor; the denominator counts only the
        # participants whose ciphertexts were summed.
        total, weight = self.session.aggregate(fits)
        if self.release is not None:
            return self.release(np.asarray(total, dtype=np.float64))
        return (np.asarray(total) / weight).astype(np.float32)

    def metrics(self) -> dict[str, float]:
        return dict(self.session.metrics())

    def close(self) -> None:
        self.session.close()


def build_aggregation(plan: Any, pipeline: Pipeline, *, num_params: int,
                      release: Release | None, strategy: Strategy) -> Aggregation:
    """The aggregation the plan's mode names (``plan``: a ``rayfed.plan.RunPlan``);
    under secure aggregation it starts the run's key authority and decryptor."""
    if plan.secure_agg is not None:
        from rayfed.secure_agg.session import SecureAggregation

        session = SecureAggregation(plan.secure_agg, num_params=num_params)
        return EncryptedAggregation(session, release=release)
    return PlainAggregation(pipeline, unit_weights=plan.privacy.unit_weights, release=release,
                            strategy=strategy, robust=plan.aggregation == "robust")
