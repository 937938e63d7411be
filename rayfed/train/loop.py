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
) -> TrainStats:
    """One pass over ``batches``; returns the example-weighted mean loss."""
    model.train()
    loss_sum, seen, steps = 0.0, 0, 0
    params = [p for p in model.parameters() if p.requires_grad]
    for xb, yb in batches:
        if len(xb) == 0:  # Poisson sampling (DP) can draw an empty batch
            continue
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        if proximal_mu > 0 and anchor is not None:
            # d/dw (mu/2)||w - w0||² = mu (w - w0); added after backward so that it
            # is exact and never per-sample clipped under DP.
            with torch.no_grad():
                for p, p0 in zip(params, anchor, strict=True):
                    if p.grad is not None:
                        p.grad.add_(p - p0, alpha=proximal_mu)
        optimizer.step()
        loss_sum += float(loss.detach()) * len(xb)
        seen += len(xb)
        steps += 1
    return TrainStats(loss=loss_sum / max(seen, 1), num_examples=seen, steps=steps)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 4096
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    if len(x) == 0:
        return float("nan"), float("nan")
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = model(xb)
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    return loss_sum / len(x), correct / len(x)
