"""resnet_gn: realistic size, CIFAR shapes, and Opacus DP-SGD on it."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from rayfed.models import ModelSpec, build_model, num_params
from rayfed.models.resnet import DEFAULT_CHANNELS

CIFAR = (3, 32, 32)


def resnet(channels: tuple[int, ...] = DEFAULT_CHANNELS, num_classes: int = 10) -> nn.Module:
    return build_model(ModelSpec("resnet_gn", CIFAR, num_classes, channels=channels), seed=0)


def test_default_widths_give_a_realistic_size() -> None:
    # Counted by hand for widths (32, 64, 128, 256), two blocks per stage: 2,797,610.
    assert num_params(resnet()) == 2_797_610
    assert 1_000_000 <= num_params(resnet()) <= 11_000_000


def test_resnet18_widths_are_the_large_end() -> None:
    assert 11_000_000 < num_params(resnet((64, 128, 256, 512))) < 11_300_000


def test_cifar_batch_gives_logits() -> None:
    out = resnet(num_classes=7)(torch.randn(3, *CIFAR))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_no_batchnorm_and_opacus_accepts_it() -> None:
    model = resnet()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 20
    assert ModuleValidator.validate(model, strict=False) == []


def test_per_sample_gradients_match_one_sample_backward() -> None:
    # GradSampleModule on a batch of 4: each per-sample gradient must equal the
    # gradient of that sample alone (what DP-SGD clips), which fails if any layer
    # mixes samples.
    model = resnet((8, 16))
    gsm = GradSampleModule(model, loss_reduction="sum")
    x, y = torch.randn(4, *CIFAR), torch.tensor([0, 3, 5, 9])
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad_sample is not None and p.grad_sample.shape[0] == 4 for p in params)
    for i in (0, 3):
        ref = build_model(ModelSpec("resnet_gn", CIFAR, 10, channels=(8, 16)), seed=0)
        nn.functional.cross_entropy(ref(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        for p, q in zip(params, ref.parameters(), strict=True):
            torch.testing.assert_close(p.grad_sample[i], q.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(30,), (1, 40)])
def test_non_image_inputs_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="model=resnet_gn needs image inputs"):
        build_model(ModelSpec("resnet_gn", shape, 2))
