"""The DDP job's data recipe and the DP noise probe, without Ray."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rayfed.config import DatasetConfig, PrivacyConfig
from rayfed.errors import DataError
from rayfed.train import make_optimizer, train_epoch
from rayfed.train.private import attach_noise_probe, make_private, plan_dp
from rayfed.train.trace import IndexRecorder, param_digest
from rayfed.train.workload import SYNTHETIC_LABEL, DataSource


def test_missing_cifar10_is_synthetic_only_when_asked_and_says_so():
    with pytest.raises(DataError, match=r"dataset\.root"):
        DataSource(DatasetConfig(name="cifar10")).load()
    work = DataSource(DatasetConfig(name="cifar10"), synthetic_if_missing=True,
                      synthetic_examples=128).load()
    assert work.synthetic and work.source == SYNTHETIC_LABEL
    assert work.x_train.shape == (128, 3, 32, 32) and work.x_test is None
    real = DataSource(DatasetConfig(name="digits"), synthetic_if_missing=True).load()
    assert not real.synthetic and real.x_test is not None and real.num_classes == 10


def test_noise_probe_measures_sigma_c_sqrt_d_on_a_single_rank():
    torch.manual_seed(0)
    x, y = torch.randn(256, 20), torch.randint(0, 4, (256,))
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    d = sum(p.numel() for p in model.parameters())
    dataset = IndexRecorder(TensorDataset(x, y))
    loader = DataLoader(dataset, batch_size=32, shuffle=True)
    plan = plan_dp(PrivacyConfig(name="local_dp", noise_multiplier=2.0, clipping_norm=0.5),
                   num_examples=256, num_workers=1, batch_size=32, epochs=1)
    optimizer = make_optimizer(model.parameters(), name="sgd", lr=0.1)
    module, dp_opt, dp_loader = make_private(model, optimizer, loader, plan, distributed=False,
                                             noise_generator=torch.Generator().manual_seed(0))
    norms: list[float] = []
    attach_noise_probe(dp_opt, norms.append)
    before = param_digest(model)
    train_epoch(module, dp_loader, dp_opt)
    assert param_digest(model) != before
    assert len(norms) >= 5
    expected = 2.0 * 0.5 * math.sqrt(d)
    assert all(0.8 * expected < n < 1.2 * expected for n in norms)
    assert set(dataset.seen) <= set(range(256)) and len(dataset.seen) > 0
    assert plan.sample_rate == pytest.approx(1 / 8) and plan.epsilon(8) > 0
