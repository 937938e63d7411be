"""The ``compression`` section of the config, and its checks."""

from __future__ import annotations

from dataclasses import dataclass

COMPRESSION_CODECS = ("none", "int8", "topk")
FINAL_MODEL_FORMATS = ("none", "int8")


@dataclass
class CompressionConfig:
    """Update compression on the wire and int8 export of the final model
    (``conf/compression/``); logic in ``rayfed.compression``."""

    # Update codec: stochastic int8 per tensor, or top-k with error feedback.
    name: str = "none"
    # topk: share of the update's coordinates each participant sends per round.
    topk_ratio: float = 0.01
    # int8: post-training quantization of the final global model.
    final_model: str = "none"
    # Server-side examples (drawn from its held-out split) that calibrate static
    # quantization's activation ranges; the rest measure fp32 vs int8 accuracy.
    calibration_examples: int = 64
    # Batch size of the CPU latency measurement.
    latency_batch_size: int = 64


def compression_problems(c: CompressionConfig) -> list[str]:
    """Every problem with the ``compression`` section on its own."""
    p: list[str] = []
    if c.name not in COMPRESSION_CODECS:
        p.append(f"compression={c.name!r} is not one of {sorted(COMPRESSION_CODECS)}; "
                 "pick one of those (files in conf/compression/)")
    if not 0 < c.topk_ratio <= 1:
        p.append(f"compression.topk_ratio={c.topk_ratio} must be in (0, 1], e.g. 0.01 "
                 "to send 1% of the coordinates")
    if c.final_model not in FINAL_MODEL_FORMATS:
        p.append(f"compression.final_model={c.final_model!r} is not one of "
                 f"{sorted(FINAL_MODEL_FORMATS)}")
    if c.calibration_examples < 1:
        p.append(f"compression.calibration_examples={c.calibration_examples} must be >= 1, "
                 "e.g. 64")
    if c.latency_batch_size < 1:
        p.append(f"compression.latency_batch_size={c.latency_batch_size} must be >= 1")
    return p
