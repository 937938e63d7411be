"""The one local training loop.

The same functions run a participant's local round, the Ray Train DDP job and the
unit tests: the caller hands in the model, an iterable of batches and an
optimizer. FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous
Networks") adds the gradient of (mu/2)·||w - w_global||² to every step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Optimization:
    """How a model is trained: what a participant's round and the DDP job share."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    # FedProx's μ; 0 is plain local SGD.
    proximal_mu: float = 0.0


@dataclass(frozen=True)
class TrainStats:
    loss: float
    num_examples: int
    steps: int


def tensor_batches(
    x: torch.Tensor, y: torch.Tensor, *, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled minibatches of in-memory tensors.

    A ``DataLoader`` costs ~100 µs per batch in worker bookkeeping, which is most
    of a step for the small models of cross-device FL; indexing is enough.
    """
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def make_optimizer(
    params: Iterable[nn.Parameter], *, name: str, lr: float, momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"fl.optimizer={name!r} is unknown; use 'sgd' or 'adam'")


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    proximal_mu: float = 0.0,
    anchor: list[torch.Tensor] | None = None,
    device: torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    step_on_empty: bool = False,
) -> TrainStats:
    """One pass over ``batches``; returns the example-weighted mean loss.

    ``device``: batches are copied there with ``non_blocking`` (overlapping the
    copy with compute when the loader pins memory). ``autocast_dtype``: forward
    pass under ``torch.autocast`` (bf16/fp16 AMP); ``scaler``: fp16 loss scaling.
    ``model`` may be DDP-wrapped: DDP all-reduces gradients inside ``backward``.
    ``step_on_empty``: DP-SGD's Poisson sampling can draw an empty batch, and the
    accountant counts that step: it must still add its noise (Opacus's per-sample
    gradients of an empty batch are empty, so the step is pure noise).
    """
    model.train()
    # The loss is summed on the device and read once: a float() per step would
    # stall a GPU's queue on every batch.
    loss_sum: torch.Tensor | float = 0.0
    seen, steps = 0, 0
    prox = proximal_mu > 0 and anchor is not None
    params = [p for p in model.parameters() if p.requires_grad] if prox else []
    device_type = device.type if device is not None else "cpu"
    for xb, yb in batches:
        if len(xb) == 0:  # Poisson sampling (DP) can draw an empty batch
            if step_on_empty:
                optimizer.zero_grad(set_to_none=True)
                # A summed loss: the mean of no examples would be NaN.
                F.cross_entropy(model(xb.to(device) if device is not None else xb),
                                yb.to(device) if device is not None else yb,
                                reduction="sum").backward()
                optimizer.step()
                steps += 1
            continue
        if device is not None:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        if autocast_dtype is None:  # no autocast context: it costs µs per step
            loss = F.cross_entropy(model(xb), yb)
        else:
            with torch.autocast(device_type, dtype=autocast_dtype):
                loss = F.cross_entropy(model(xb), yb)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # the proximal term below is in true units
        else:
            loss.backward()
        if prox:
            # d/dw (mu/2)||w - w0||² = mu (w - w0); added after backward so that it
            # is exact and never per-sample clipped under DP.
            with torch.no_grad():
                for p, p0 in zip(params, anchor or [], strict=True):
                    if p.grad is not None:
                        p.grad.add_(p - p0, alpha=proximal_mu)
        if scaler is not None:
            scaler.step(optimizer)  # skips the step if the fp16 gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        loss_sum = loss_sum + loss.detach().double() * len(xb)
        seen += len(xb)
        steps += 1
    return TrainStats(loss=float(loss_sum) / max(seen, 1), num_examples=seen, steps=steps)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 4096,
    device: torch.device | None = None, autocast_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    if len(x) == 0:
        return float("nan"), float("nan")
    loss_sum, correct = 0.0, 0
    device_type = device.type if device is not None else "cpu"
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        if device is not None:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            logits = model(xb).float()
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    return loss_sum / len(x), correct / len(x)
