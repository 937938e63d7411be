"""A ResNet with GroupNorm for 32x32 images: a built-in model of realistic size.

The architecture is ResNet-18's (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016) in its CIFAR form: a 3x3 stem, no max-pool, stages of
two basic blocks, stride 2 from the second stage on, global average pooling.
BatchNorm is replaced by GroupNorm (Wu & He, "Group Normalization", ECCV 2018)
because DP-SGD needs each sample's gradient on its own, and BatchNorm mixes the
samples of a batch; this is the substitution Opacus's ``ModuleValidator.fix``
makes and the one De et al. ("Unlocking High-Accuracy Differentially Private
Image Classification through Scale", 2022) use, with 16 groups.

``spec.channels`` gives one width per stage: ``(32, 64, 128, 256)`` has about
2.8 M parameters, ``(64, 128, 256, 512)`` (ResNet-18's widths) about 11 M.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from rayfed.models.spec import ModelSpec

# Widths of the 2.8 M-parameter network that conf/model/resnet_gn.yaml should name.
DEFAULT_CHANNELS = (32, 64, 128, 256)
_GROUPS = 16


def _norm(channels: int) -> nn.GroupNorm:
    # gcd keeps the group count a divisor of the width for narrow test networks.
    return nn.GroupNorm(math.gcd(channels, _GROUPS), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projected when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(out_ch))
        # Not in-place: Opacus's hooks keep the activations that backward needs.
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNetGN(nn.Module):
    """CIFAR-style ResNet with ``blocks_per_stage`` basic blocks in each stage."""

    def __init__(self, in_channels: int, num_classes: int, channels: tuple[int, ...],
                 blocks_per_stage: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
            _norm(channels[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        width = channels[0]
        for stage, out_ch in enumerate(channels):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(width, out_ch, stride))
                width = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def resnet_gn(spec: ModelSpec) -> nn.Module:
    """The registry's builder: widths from ``spec.channels``, (C, H, W) inputs."""
    if len(spec.input_shape) != 3:
        raise ValueError(f"model=resnet_gn needs image inputs (C, H, W), got "
                         f"{spec.input_shape}; use model=mlp for this dataset")
    if not spec.channels or min(spec.channels) < 1:
        raise ValueError(f"model=resnet_gn needs model.channels with one positive width per "
                         f"stage, got {list(spec.channels)}; use e.g. {list(DEFAULT_CHANNELS)}")
    return ResNetGN(spec.input_shape[0], spec.num_classes, tuple(spec.channels))
