"""Compression stages inside a real Participant and pipeline; config checks."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import torch

from rayfed.compression.codecs import QuantizedUpdate, SparseUpdate, densify, topk_count
from rayfed.compression.stages import Int8Stage, TopKStage
from rayfed.config import CompressionConfig, Config, PrivacyConfig, validate
from rayfed.data.federated import ClientData
from rayfed.fl.participant import LocalTraining, Participant
from rayfed.fl.participant import _load_state as carried
from rayfed.models import ModelSpec, build_model, get_flat
from rayfed.plan import build_pipeline, resolve
from rayfed.stages import Pipeline
from rayfed.types import FitIns

SPEC = ModelSpec("mlp", (1, 8, 8), 10, (16,))
SIZES = [64 * 16, 16, 16 * 10, 10]


def participant(stages=()) -> Participant:
    g = torch.Generator().manual_seed(0)
    data = ClientData(3, torch.randn(40, 1, 8, 8, generator=g),
                      torch.randint(0, 10, (40,), generator=g),
                      torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
    training = LocalTraining(epochs=1, batch_size=8, lr=0.1)
    return Participant(data, build_model(SPEC, seed=0), training, Pipeline(stages))


def weights(seed: int) -> np.ndarray:
    return get_flat(build_model(SPEC, seed=seed))


def test_int8_stage_quantizes_each_parameter_tensor_with_its_own_scale() -> None:
    w = weights(1)
    plain = participant().fit(w, FitIns(3, 1, seed=7))
    res = participant([Int8Stage()]).fit(w, FitIns(3, 1, seed=7))
    payload = res.delta
    assert isinstance(payload, QuantizedUpdate)
    assert payload.sizes.tolist() == SIZES
    assert res.payload_bytes == len(pickle.dumps(payload, protocol=5))
    # One byte per value + a 36-byte header (4 sizes, 4 scales, count) + pickle's
    # ~80-byte frame, against 4 bytes per value for the raw float32 delta.
    n = sum(SIZES)
    assert n + 36 < res.payload_bytes < n + 36 + 100 and plain.payload_bytes > 4 * n
    step = np.repeat(payload.scales, SIZES)
    np.testing.assert_array_less(np.abs(Int8Stage().decode(payload) - plain.delta),
                                 step * (1 + 1e-6))
    peaks = [np.abs(t).max() / 127 for t in np.split(plain.delta, np.cumsum(SIZES)[:-1])]
    np.testing.assert_allclose(payload.scales, peaks, rtol=1e-6)
    assert len(set(payload.scales.tolist())) == len(SIZES)


def test_topk_residual_is_carried_across_rounds_and_loses_nothing() -> None:
    stage = TopKStage(0.05)
    k = topk_count(sum(SIZES), 0.05)
    state = None
    residual = np.zeros(sum(SIZES), np.float32)
    for rnd, w in enumerate((weights(1), weights(2), weights(3)), start=1):
        true = participant().fit(w, FitIns(3, rnd, seed=rnd)).delta
        res = participant([stage]).fit(w, FitIns(3, rnd, seed=rnd, state=state))
        assert isinstance(res.delta, SparseUpdate) and len(res.delta.indices) == k
        state = res.state
        new_residual = carried(state)["stages"]["topk"]["residual"]
        np.testing.assert_array_equal(densify(res.delta) + new_residual, residual + true)
        residual = new_residual
    assert np.abs(residual).sum() > 0


def test_build_pipeline_picks_the_codec_after_privacy_stages() -> None:
    assert build_pipeline(resolve(Config())).names == ()
    int8 = replace(Config(), compression=CompressionConfig(name="int8"))
    assert build_pipeline(resolve(int8)).names == ("int8",)
    topk = replace(Config(), compression=CompressionConfig(name="topk", topk_ratio=0.1))
    (stage,) = build_pipeline(resolve(topk)).stages
    assert isinstance(stage, TopKStage) and stage.ratio == 0.1 and stage.order == 2


def test_validation_names_every_bad_compression_key() -> None:
    bad = replace(Config(), compression=CompressionConfig(
        name="gzip", topk_ratio=0.0, final_model="fp16", calibration_examples=0,
        latency_batch_size=0))
    problems = validate(bad)
    for key in ("compression='gzip'", "compression.topk_ratio=0.0",
                "compression.final_model='fp16'", "compression.calibration_examples=0",
                "compression.latency_batch_size=0"):
        assert any(p.startswith(key) for p in problems), key
    assert validate(Config()) == []


def test_compression_is_refused_with_central_dp_but_allowed_with_local_dp() -> None:
    int8 = CompressionConfig(name="int8")
    central = replace(Config(), compression=int8, privacy=PrivacyConfig(name="central_dp"))
    assert any("privacy=central_dp" in p for p in validate(central))
    local = replace(Config(), compression=int8, privacy=PrivacyConfig(name="local_dp"))
    assert not [p for p in validate(local) if "compression" in p]
