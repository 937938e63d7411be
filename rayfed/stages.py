"""The path an update takes from a participant to the server, as composable stages.

Participant:  delta ─▶ stage₁.encode ─▶ … ─▶ stageₖ.encode ─▶ payload (the wire)
Server:       payload ─▶ stageₖ.decode ─▶ … ─▶ stage₁.decode ─▶ update ─▶ reducer

Stages come in the order privacy needs: clip → noise → quantize/sparsify →
encrypt. A stage that has no server-side inverse (clipping, client-side noise)
simply has no ``decode``. Each stage's per-participant state (an error-feedback
residual, say) lives in ``UpdateContext.state[stage.name]`` and travels with the
participant between rounds, whichever actor serves it.

Features compose through this list; there is no class per combination.
:class:`Pipeline` rejects invalid orders up front; :func:`rayfed.plan.build_pipeline`
asks each feature for the stages its plan needs. This module sits below every
feature: stages import it, it imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rayfed.errors import ConfigError


@dataclass
class UpdateContext:
    """What a stage may know about the update it encodes."""

    participant_id: int
    server_round: int
    num_examples: int
    rng: np.random.Generator
    # Per-participant, per-stage state carried across rounds (keyed by stage name).
    state: dict[str, Any] = field(default_factory=dict)
    # Sizes of the model's parameter tensors, in the order they lie in the flat
    # update (per-tensor codecs need the boundaries); empty = one tensor.
    tensor_sizes: tuple[int, ...] = ()


@runtime_checkable
class Stage(Protocol):
    """One participant-side transformation of an update."""

    name: str
    # Position in the canonical order clip(0) → noise(1) → compress(2) → encrypt(3).
    order: int

    def encode(self, update: Any, ctx: UpdateContext) -> Any: ...


@runtime_checkable
class Decodable(Stage, Protocol):
    """A stage whose inverse the server applies to each update before reducing."""

    def decode(self, payload: Any) -> Any: ...


@runtime_checkable
class Provisioned(Stage, Protocol):
    """A stage that needs per-run material before it can encode, e.g. the key
    that secure aggregation's key authority makes for each run."""

    def provision(self, material: Any) -> None: ...


class Pipeline:
    """An ordered list of stages; empty means the raw float32 delta is sent."""

    def __init__(self, stages: Sequence[Stage] = ()) -> None:
        orders = [s.order for s in stages]
        if orders != sorted(orders):
            names = " → ".join(s.name for s in stages)
            raise ConfigError([f"update pipeline {names} is out of order; stages must run "
                               "clip → noise → compress → encrypt"])
        self.stages = tuple(stages)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def encode(self, update: np.ndarray, ctx: UpdateContext) -> Any:
        payload: Any = update
        for stage in self.stages:
            payload = stage.encode(payload, ctx)
        return payload

    def provision(self, materials: Mapping[str, Any]) -> None:
        """Hand each stage its per-run material, keyed by stage name."""
        for stage in self.stages:
            if stage.name in materials and isinstance(stage, Provisioned):
                stage.provision(materials[stage.name])

    def decode(self, payload: Any) -> Any:
        for stage in reversed(self.stages):
            if isinstance(stage, Decodable):
                payload = stage.decode(payload)
        return payload
