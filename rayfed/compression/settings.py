"""Checks of the ``compression`` section, collected with every other problem.

:func:`rayfed.config.validate` calls :func:`compression_problems`; each message
names its key and the fix, so a bad command line is corrected in one go.
"""

from __future__ import annotations

from rayfed.config import COMPRESSION_CODECS, FINAL_MODEL_FORMATS, Config


def compression_problems(cfg: Config) -> list[str]:
    """Every problem with ``cfg.compression`` and its combination with other sections."""
    c = cfg.compression
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
    if c.name != "none" and cfg.privacy.name == "central_dp":
        # User-level DP-FedAvg's noise is calibrated to ||update|| <= clipping_norm,
        # and neither codec keeps that bound: stochastic int8 can grow a clipped
        # update by up to sqrt(d)/127 of its norm, and error feedback sends residual
        # mass from earlier rounds on top of this round's clipped update.
        p.append(f"compression={c.name!r} cannot be combined with privacy=central_dp: the "
                 "decoded update would no longer be bounded by privacy.clipping_norm, so "
                 "the noise would not cover it; use privacy=local_dp (compression is then "
                 "post-processing of a DP output) or compression=none (docs/compression.md)")
    return p
