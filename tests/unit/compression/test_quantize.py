"""Final-model int8 PTQ on a briefly trained digits model: sizes, accuracy, honesty."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from torch import nn

from rayfed.compression.final import export_final_model
from rayfed.compression.quantize import (
    fp32_weight_layers,
    quantize_dynamic_int8,
    quantize_final_model,
    restore_int8,
    serialized_bytes,
)
from rayfed.config import CompressionConfig
from rayfed.data.datasets import load_splits
from rayfed.models import ModelSpec, build_model
from rayfed.train import make_optimizer, tensor_batches, train_epoch


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train, test = load_splits("digits", root=None, test_fraction=0.2, seed=0, num_samples=0)
    return (torch.from_numpy(train.x), torch.from_numpy(train.y),
            torch.from_numpy(test.x), torch.from_numpy(test.y))


def trained(name: str, digits, epochs: int = 8, **spec) -> nn.Module:
    x, y, _, _ = digits
    model = build_model(ModelSpec(name, (1, 8, 8), 10, **spec), seed=0)
    opt = make_optimizer(model.parameters(), name="sgd", lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        train_epoch(model, tensor_batches(x, y, batch_size=32, generator=g), opt)
    return model.eval()


def run(model, digits, **kw):
    _, _, xt, yt = digits
    return quantize_final_model(model, xt, yt, num_calibration=64, latency_batch_size=32,
                                rng=np.random.default_rng(0), **kw)


def test_mlp_is_dynamically_quantized_within_one_point(digits) -> None:
    model = trained("mlp", digits, epochs=3, hidden_sizes=(512, 256))
    _, r = run(model, digits)
    assert r.method == "dynamic" and r.fp32_layers == ()
    assert r.quantized_layers == ("1", "3", "5")  # every Linear
    assert r.eval_examples == 360 and r.calibration_examples == 0
    assert r.accuracy_fp32 > 0.9
    assert abs(r.accuracy_int8 - r.accuracy_fp32) <= 0.01
    # Serialized bytes, not the dict object (sys.getsizeof counts ~100s of bytes).
    assert r.model_bytes_fp32 > 4 * sum(p.numel() for p in model.parameters())
    assert sys.getsizeof(model.state_dict()) < r.model_bytes_fp32 / 100
    assert r.size_ratio > 3.5
    # The compact container saves what torch.save spends on its zip records.
    assert r.model_bytes_int8 < r.torch_save_bytes_int8 - 3000
    assert r.model_bytes_fp32 < r.torch_save_bytes_fp32
    assert r.latency_ms_fp32 > 0 and r.latency_ms_int8 > 0


def test_cnn_is_statically_quantized_with_calibration(digits) -> None:
    model = trained("cnn", digits, epochs=4)
    _, r = run(model, digits)
    assert r.method == "static_fx" and r.fallback_reason is None
    convs_and_linears = {n for n, m in model.named_modules()
                         if isinstance(m, nn.Conv2d | nn.Linear)}
    assert set(r.quantized_layers) == convs_and_linears and r.fp32_layers == ()
    assert r.calibration_examples == 64 and r.eval_examples == 360 - 64
    assert r.accuracy_fp32 > 0.85
    assert abs(r.accuracy_int8 - r.accuracy_fp32) <= 0.03
    assert r.size_ratio > 2


def test_dynamic_quantization_leaves_convolutions_fp32_and_says_so(digits) -> None:
    model = build_model(ModelSpec("cnn", (1, 8, 8), 10), seed=0)
    assert fp32_weight_layers(quantize_dynamic_int8(model)) == ["0", "3"]


class Branchy(nn.Module):
    """Data-dependent control flow: FX cannot trace it, so static PTQ fails."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if h.sum() > 0:
            h = h.relu()
        return self.head(h.flatten(1))


def test_failed_static_quantization_falls_back_and_lists_fp32_layers(digits) -> None:
    _, r = run(Branchy().eval(), digits)
    assert r.method == "dynamic" and "FX static quantization failed" in r.fallback_reason
    assert r.fp32_layers == ("conv",) and r.quantized_layers == ("head",)


def test_export_writes_a_torchscript_model_and_summary_keys(digits, tmp_path) -> None:
    model = trained("mlp", digits, epochs=2, hidden_sizes=(32,))
    _, _, xt, yt = digits
    none = export_final_model(model, xt, yt, cfg=CompressionConfig(), data_seed=0,
                              out_dir=tmp_path)
    assert none.summary["model_bytes_fp32"] == serialized_bytes(model)
    assert none.summary["model_bytes_int8"] is None and none.path is None
    out = export_final_model(model, xt, yt, cfg=CompressionConfig(final_model="int8"),
                             data_seed=0, out_dir=tmp_path)
    assert out.path is not None and out.path.is_file()
    assert out.summary["accuracy_fp32"] == pytest.approx(none.summary["accuracy_fp32"])
    loaded = torch.jit.load(io.BytesIO(out.path.read_bytes()))
    qmodel, _ = run(model, digits)
    torch.testing.assert_close(loaded(xt[:8]), qmodel(xt[:8]))
    # The compact file is exactly the bytes reported, and it restores the model.
    assert out.state_path is not None and out.paths == (out.path, out.state_path)
    assert out.state_path.stat().st_size == out.summary["model_bytes_int8"]
    restored = restore_int8(build_model(ModelSpec("mlp", (1, 8, 8), 10, hidden_sizes=(32,))),
                            out.state_path.read_bytes(), method="dynamic", example=xt[:1])
    with torch.inference_mode():
        assert torch.equal(restored(xt), qmodel(xt))
