"""Model registry: small classifiers that all work with Opacus DP-SGD.

Opacus needs per-sample gradients, so no layer mixes samples in a batch: no
BatchNorm anywhere: ``resnet_gn`` (``rayfed.models.resnet``) uses GroupNorm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rayfed.models.resnet import resnet_gn
from rayfed.models.spec import ModelSpec


def _flat_dim(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def logreg(spec: ModelSpec) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(spec.input_shape), spec.num_classes))


def mlp(spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = _flat_dim(spec.input_shape)
    for h in spec.hidden_sizes:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, spec.num_classes))
    return nn.Sequential(*layers)


def cnn(spec: ModelSpec) -> nn.Module:
    """Conv-ReLU-MaxPool blocks, then a 128-unit head; for (C, H, W) images."""
    if len(spec.input_shape) != 3:
        raise ValueError(f"model=cnn needs image inputs (C, H, W), got {spec.input_shape}; "
                         "use model=mlp or model=cnn1d for this dataset")
    in_ch, height, width = spec.input_shape
    layers: list[nn.Module] = []
    for ch in spec.channels:
        layers += [nn.Conv2d(in_ch, ch, kernel_size=3, padding=1), nn.ReLU()]
        if min(height, width) >= 4:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        in_ch = ch
    layers += [nn.Flatten(), nn.Linear(in_ch * height * width, 128), nn.ReLU(),
               nn.Linear(128, spec.num_classes)]
    return nn.Sequential(*layers)


def cnn1d(spec: ModelSpec) -> nn.Module:
    """Strided 1-D convolutions as in Greydanus 2020's MNIST-1D CNN baseline."""
    if len(spec.input_shape) != 2:
        raise ValueError(f"model=cnn1d needs sequence inputs (C, L), got {spec.input_shape}; "
                         "use dataset=mnist1d")
    in_ch, length = spec.input_shape
    layers: list[nn.Module] = []
    for i, ch in enumerate(spec.channels):
        stride = 2 if i > 0 else 1
        layers += [nn.Conv1d(in_ch, ch, kernel_size=5 if i == 0 else 3, stride=stride,
                             padding=2 if i == 0 else 1), nn.ReLU()]
        length = (length - 1) // stride + 1
        in_ch = ch
    layers += [nn.Flatten(), nn.Linear(in_ch * length, spec.num_classes)]
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "logreg": logreg,
    "mlp": mlp,
    "cnn": cnn,
    "cnn1d": cnn1d,
    "resnet_gn": resnet_gn,
}


def build_model(spec: ModelSpec, *, seed: int | None = None) -> nn.Module:
    """Build ``spec``'s model; with ``seed`` its initial weights are deterministic."""
    if spec.name not in MODELS:
        raise ValueError(f"model={spec.name!r} is unknown; pick one of {sorted(MODELS)}")
    if seed is None:
        return MODELS[spec.name](spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[spec.name](spec)
