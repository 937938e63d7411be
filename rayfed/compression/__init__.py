"""Compression: update codecs on the wire and int8 export of the final model."""

from rayfed.compression.codecs import (
    QuantizedUpdate,
    SparseUpdate,
    densify,
    dequantize_int8,
    quantize_int8,
    sparsify,
    sparsify_with_feedback,
    topk_count,
)
from rayfed.compression.stages import Int8Stage, TopKStage, compression_stages

__all__ = [
    "Int8Stage",
    "QuantizedUpdate",
    "SparseUpdate",
    "TopKStage",
    "compression_stages",
    "densify",
    "dequantize_int8",
    "quantize_int8",
    "sparsify",
    "sparsify_with_feedback",
    "topk_count",
]
