"""Compression as pipeline stages (order 2: after clip and noise, before encrypt).

Participants encode, the server decodes each update before the reducer; the
payload's pickled size is what ``FitRes.payload_bytes`` counts. The top-k stage
keeps its error-feedback residual in ``UpdateContext.state``, which travels with
the participant between rounds, whichever actor serves it (pooled or not), and is
checkpointed with the other participant state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rayfed.compression.codecs import (
    QuantizedUpdate,
    SparseUpdate,
    densify,
    dequantize_int8,
    quantize_int8,
    sparsify_with_feedback,
    topk_count,
)
from rayfed.compression.config import CompressionConfig
from rayfed.stages import Stage, UpdateContext

COMPRESS_ORDER = 2


class Int8Stage:
    """Unbiased stochastic int8 quantization, one scale per parameter tensor."""

    name = "int8"
    order = COMPRESS_ORDER

    def encode(self, update: np.ndarray, ctx: UpdateContext) -> QuantizedUpdate:
        return quantize_int8(update, sizes=ctx.tensor_sizes, rng=ctx.rng)

    def decode(self, payload: Any) -> np.ndarray:
        if not isinstance(payload, QuantizedUpdate):
            raise TypeError(f"int8 stage expected a QuantizedUpdate, got {type(payload).__name__}")
        return dequantize_int8(payload)


class TopKStage:
    """Top-k sparsification with a per-participant error-feedback residual."""

    name = "topk"
    order = COMPRESS_ORDER

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def encode(self, update: np.ndarray, ctx: UpdateContext) -> SparseUpdate:
        mine = ctx.state.setdefault(self.name, {})
        sent, mine["residual"] = sparsify_with_feedback(
            update, mine.get("residual"), k=topk_count(update.size, self.ratio))
        return sent

    def decode(self, payload: Any) -> np.ndarray:
        if not isinstance(payload, SparseUpdate):
            raise TypeError(f"topk stage expected a SparseUpdate, got {type(payload).__name__}")
        return densify(payload)


def compression_stages(c: CompressionConfig) -> list[Stage]:
    """The stage ``compression=<name>`` asks for (none for ``none``)."""
    if c.name == "int8":
        return [Int8Stage()]
    if c.name == "topk":
        return [TopKStage(c.topk_ratio)]
    return []
