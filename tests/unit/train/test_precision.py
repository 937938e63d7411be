"""AMP plans, the shared loop under bf16 autocast on CPU, and the DDP job's config checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rayfed.config import Config
from rayfed.config import validate as validate_federated
from rayfed.errors import ConfigError
from rayfed.train import evaluate, make_optimizer, tensor_batches, train_epoch
from rayfed.train.config import TrainJobConfig, validate
from rayfed.train.job import steady_samples_per_second
from rayfed.train.precision import amp_plan, make_grad_scaler, precision_problems
from rayfed.train.private import dp_sample_rate


def test_fp16_on_cpu_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as err:
        amp_plan("fp16", torch.device("cpu"))
    assert "train.precision=bf16" in str(err.value)
    assert precision_problems("fp16", use_gpu=True) == []
    assert "not one of" in precision_problems("fp8", use_gpu=True)[0]


def test_plans_pick_autocast_dtype_and_scaler():
    cpu = torch.device("cpu")
    assert amp_plan("fp32", cpu).autocast_dtype is None
    bf16 = amp_plan("bf16", cpu)
    assert bf16.autocast_dtype == torch.bfloat16 and not bf16.use_grad_scaler
    assert make_grad_scaler(bf16) is None
    fp16 = amp_plan("fp16", torch.device("cuda", 0))
    assert fp16.autocast_dtype == torch.float16 and fp16.use_grad_scaler


def _blobs(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    return centers[y] + torch.randn(n, 2, generator=g), y


def test_shared_loop_trains_under_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = make_optimizer(model.parameters(), name="sgd", lr=0.1)
    seen_dtypes = []
    model[0].register_forward_hook(lambda m, i, o: seen_dtypes.append(o.dtype))
    first = None
    for epoch in range(5):
        stats = train_epoch(model, tensor_batches(x, y, batch_size=32,
                                                  generator=torch.Generator().manual_seed(epoch)),
                            opt, device=torch.device("cpu"), autocast_dtype=torch.bfloat16)
        first = first if first is not None else stats.loss
    assert seen_dtypes[0] == torch.bfloat16  # the forward really ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert stats.loss < 0.5 * first
    _, acc = evaluate(model, x, y, autocast_dtype=torch.bfloat16)
    assert acc > 0.95


def test_job_validation_lists_every_problem():
    job = TrainJobConfig()
    job.train.precision = "fp16"
    job.train.num_workers = 0
    job.train.epochs = 0
    job.resume = True
    job.privacy.name = "local_dp"
    job.train.faults.crash_rank = 3
    problems = validate(job)
    text = "\n".join(problems)
    for key in ("train.precision=fp16", "train.num_workers=0", "train.epochs=0",
                "resume=true needs train.run_name", "privacy.target_epsilon",
                "train.faults.crash_rank=3", "Opacus's per-sample gradients"):
        assert key in text, key
    assert validate(TrainJobConfig()) == []


def test_participant_trainer_is_checked_with_the_federated_config():
    cfg = Config()
    assert validate_federated(cfg) == []
    cfg.participant.trainer = "ddp"
    cfg.participant.precision = "fp16"
    cfg.fl.momentum = 0.9
    text = "\n".join(validate_federated(cfg))
    assert "participant.precision=fp16 needs CUDA" in text
    assert "fl.momentum=0" in text
    cfg.participant.trainer = "horovod"
    assert "participant.trainer='horovod'" in "\n".join(validate_federated(cfg))


def test_dp_sample_rate_matches_opacus_distributed_loader_length():
    # 1437 digits examples over 2 ranks in batches of 32: ⌈719 / 32⌉ = 23 batches.
    assert dp_sample_rate(1437, num_workers=2, batch_size=32) == pytest.approx(1 / 23)
    assert dp_sample_rate(100, num_workers=1, batch_size=100) == 1.0


def test_steady_throughput_skips_the_warm_up_epoch():
    assert steady_samples_per_second([10.0, 100.0, 110.0]) == pytest.approx(105.0)
    assert steady_samples_per_second([42.0]) == 42.0
    assert steady_samples_per_second([]) is None


@pytest.mark.parametrize(("overrides", "problem"), [
    ([], None),
    (["train=gpu", "dataset=cifar10", "model=cnn"], None),
    (["train.precision=fp16"], "train.precision=fp16 needs CUDA"),
    (["privacy=local_dp", "privacy.noise_multiplier=1.0"], None),
    (["privacy=central_dp"], "does not apply to centralized training"),
])
def test_train_job_config_composes_from_conf(overrides, problem):
    from hydra import compose, initialize_config_dir

    from rayfed.train.config import register_train_configs, to_train_job_config
    from tests.conftest import CONF

    register_train_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        job = to_train_job_config(compose(config_name="train_job", overrides=overrides))
    problems = validate(job)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems
