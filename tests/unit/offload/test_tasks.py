"""FLOPs and bytes of real tasks, the int8 variant, loading a trained model, the stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayfed.errors import ConfigError
from rayfed.models.registry import ModelSpec, build_model
from rayfed.offload.config import TaskKindConfig, WorkloadConfig, ZooModelConfig
from rayfed.offload.tasks import count_flops, describe_kinds, make_stream
from rayfed.offload.zoo import build_zoo, instantiate, is_linear_only, quantize_int8, run_task


def workload(**models: ZooModelConfig) -> WorkloadConfig:
    return WorkloadConfig(
        models=models or {"lr": ZooModelConfig(name="logreg", train_epochs=1),
                          "cnn": ZooModelConfig(name="cnn", channels=[4], train_epochs=0)},
        tasks={"lr_infer": TaskKindConfig(model="lr", batch_size=16),
               "lr_train": TaskKindConfig(model="lr", op="train", batch_size=8),
               "cnn_infer": TaskKindConfig(model="cnn", batch_size=4)})


def test_flops_match_the_analytic_count():
    model = build_model(ModelSpec("logreg", (1, 8, 8), 10), seed=0)
    x, y = torch.zeros(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)
    # One 16x64 @ 64x10 matmul: 2 * 16 * 64 * 10 FLOPs.
    assert count_flops(model, "infer", x, y) == 2 * 16 * 64 * 10
    # Training adds the weight gradient (same size) and no input gradient.
    assert count_flops(model, "train", x, y) == 2 * (2 * 16 * 64 * 10)


def test_kinds_carry_flops_bytes_complexity_and_variant_accuracy():
    kinds = describe_kinds(workload(), build_zoo(workload(), seed=0))
    lr = kinds["lr_infer"]
    assert (lr.flops, lr.input_bytes, lr.output_bytes) == (2 * 16 * 64 * 10, 16 * 64 * 4,
                                                            16 * 10 * 4)
    assert lr.model_bytes == (64 * 10 + 10) * 4
    assert set(lr.accuracy) == {"fp32", "int8"} and lr.accuracy["fp32"] > 0.5
    # A training step runs in float only; its output is the update, one float per weight.
    assert set(kinds["lr_train"].accuracy) == {"fp32"}
    assert kinds["lr_train"].output_bytes == (64 * 10 + 10) * 4
    assert set(kinds["cnn_infer"].accuracy) == {"fp32"}  # not Linear-only
    assert max(k.complexity for k in kinds.values()) == 1.0


def test_int8_variant_quantizes_linear_layers_and_keeps_predictions_close():
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, (32,)), seed=0)
    assert is_linear_only(model)
    assert not is_linear_only(build_model(ModelSpec("cnn", (1, 8, 8), 10, channels=(4,))))
    q = quantize_int8(model)
    assert "Quantized" in type(q[1]).__name__ or "quantized" in type(q[1]).__module__
    x = torch.randn(32, 1, 8, 8)
    ref, got = run_task(model, "infer", x, x), run_task(q, "infer", x, x)
    assert (ref.argmax(1) == got.argmax(1)).float().mean() >= 0.9
    assert isinstance(model[1], torch.nn.Linear)  # the original is untouched


def test_a_trained_state_dict_is_loaded_by_source(tmp_path):
    spec = ModelSpec("logreg", (1, 8, 8), 10)
    trained = build_model(spec, seed=123)
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    zoo = build_zoo(workload(lr=ZooModelConfig(name="logreg", source=str(path)),
                             cnn=ZooModelConfig(name="cnn", channels=[4], train_epochs=0)),
                    seed=0)
    loaded = instantiate(zoo["lr"])["fp32"]
    torch.testing.assert_close(loaded[1].weight, trained[1].weight)
    with pytest.raises(ConfigError, match=r"models.lr.source=.*hidden_sizes"):
        build_zoo(workload(lr=ZooModelConfig(name="mlp", source=str(path)),
                           cnn=ZooModelConfig(name="cnn", channels=[4], train_epochs=0)),
                  seed=0)


def test_stream_is_poisson_with_deadlines_and_reproducible():
    kinds = list(describe_kinds(workload(), build_zoo(workload(), seed=0)).values())
    make = lambda seed: make_stream(kinds, [1, 1, 2], ["e0", "e1"], num_tasks=4000,  # noqa: E731
                                    arrival_rate=50.0, rng=np.random.default_rng(seed))
    tasks = make(0)
    gaps = np.diff([t.arrival_s for t in tasks])
    assert tasks[0].arrival_s == 0.0 and gaps.min() >= 0
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.05)
    assert all(t.deadline_s == pytest.approx(t.arrival_s + t.kind.deadline_s) for t in tasks)
    share = np.mean([t.kind.name == "cnn_infer" for t in tasks])
    assert share == pytest.approx(0.5, abs=0.03)
    assert {t.origin for t in tasks} == {"e0", "e1"}
    assert [t.kind.name for t in make(0)] == [t.kind.name for t in tasks]
