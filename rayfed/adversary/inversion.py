"""Gradient inversion: what an honest-but-curious server can rebuild from one update.

Two attacks that optimise a dummy input until the gradient it induces matches the
observed one:

- ``dlg``: "Deep Leakage from Gradients" (Zhu, Liu & Han 2019): squared L2
  distance between the gradients, minimised with L-BFGS.
- ``ig``: "Inverting Gradients" (Geiping, Bauermeister, Dröge & Moeller 2020):
  1 − cosine similarity plus a total-variation prior, minimised with signed Adam
  inside the data's box, with the paper's step-decay schedule. The cosine ignores
  the update's scale, so the attacker needs no learning rate and clipping does
  not help.

Both take the label from the gradient first, as iDLG does (Zhao, Mopuri & Bilen
2020): for one example with cross-entropy, the last layer's weight gradient is
(softmax − onehot) ⊗ h with h ≥ 0 after a ReLU, so the true class is the only
row whose sum is negative. A restart is scored by its matching loss, which the
attacker can compute, never by its distance to the truth.

A participant's FedAvg update after one step of plain SGD on one example is
Δ = −η·∇L, so :func:`gradient_from_update` recovers the gradient exactly.
Everything here is pure: the model is read, never trained or modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Method = Literal["dlg", "ig"]
METHODS: tuple[Method, ...] = ("dlg", "ig")


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """An attack's best guess at the private example.

    ``eq=False``: arrays have no single truth value; compare ``image`` with numpy.
    """

    image: np.ndarray  # float32, the example's shape, inside the attack's bounds
    label: int
    # Matching loss of the chosen restart at its start and after each step (what the
    # attacker sees): steps + 1 values.
    losses: tuple[float, ...]
    method: Method
    restart: int

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.inf


def gradient_from_update(delta: np.ndarray, *, lr: float) -> np.ndarray:
    """The gradient behind one plain-SGD step: Δ = −lr·g, so g = −Δ/lr."""
    if lr <= 0:
        raise ValueError(f"lr={lr} must be > 0 (the participants' fl.lr)")
    return (-np.asarray(delta, dtype=np.float64) / lr).astype(np.float32)


def split_like(flat: np.ndarray, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A flat vector (as :func:`rayfed.models.get_flat` lays it out) as per-tensor views."""
    sizes = [p.numel() for p in params]
    if flat.shape != (sum(sizes),):
        raise ValueError(f"gradient has shape {flat.shape}, the model has {sum(sizes)} "
                         "parameters")
    vec = torch.as_tensor(np.ascontiguousarray(flat, dtype=np.float32))
    return [c.view_as(p) for c, p in zip(torch.split(vec, sizes), params, strict=True)]


def infer_label(grads: Sequence[torch.Tensor], *, num_classes: int) -> int:
    """iDLG: the class whose row of the last classifier weight's gradient sums lowest."""
    for g in reversed(grads):
        if g.ndim == 2 and g.shape[0] == num_classes:
            return int(torch.argmin(g.sum(dim=1)))
    raise ValueError(f"no 2-D gradient with {num_classes} rows (a classifier's last weight)")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV over the last two (spatial) axes, as a mean absolute difference."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return dh + dw


def _matching_loss(method: Method, grads: Sequence[torch.Tensor],
                   target: Sequence[torch.Tensor], target_norm: torch.Tensor) -> torch.Tensor:
    if method == "dlg":
        return sum((((g - t) ** 2).sum() for g, t in zip(grads, target, strict=True)),
                   torch.zeros(()))
    dot = sum(((g * t).sum() for g, t in zip(grads, target, strict=True)), torch.zeros(()))
    norm = torch.sqrt(sum(((g * g).sum() for g in grads), torch.zeros(())))
    return 1.0 - dot / (norm * target_norm + 1e-12)


def invert_gradient(
    model: nn.Module,
    target_grads: np.ndarray | Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    steps: int,
    seed: int,
    method: Method = "dlg",
    label: int | None = None,
    restarts: int = 1,
    step_size: float | None = None,
    tv_weight: float = 1e-4,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Reconstruction:
    """Rebuild the single example whose gradient at ``model``'s weights is ``target_grads``.

    ``target_grads``: the flat gradient (see :func:`gradient_from_update`) or one
    tensor per parameter. ``steps``: L-BFGS iterations of up to 20 evaluations
    each (``dlg``) or Adam steps (``ig``). ``label``: None recovers it (iDLG).
    ``restarts``: independent random starts; the lowest final matching loss wins.
    ``bounds``: the data's pixel range; ``ig`` stays inside it, ``dlg`` is clipped
    to it at the end.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; use one of {METHODS}")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps={steps} and restarts={restarts} must be >= 1")
    params = list(model.parameters())
    if isinstance(target_grads, np.ndarray):
        target = split_like(target_grads, params)
    else:
        target = [torch.as_tensor(t, dtype=torch.float32).detach() for t in target_grads]
    if label is None:
        label = infer_label(target, num_classes=num_classes)
    y = torch.tensor([label])
    target_norm = torch.sqrt(sum(((t * t).sum() for t in target), torch.zeros(())))
    lo, hi = bounds

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what is minimised, the matching loss alone); differentiable in ``x``."""
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        match = _matching_loss(method, grads, target, target_norm)
        if method == "ig":
            return match + tv_weight * total_variation(x), match
        return match, match

    def one(restart: int) -> Reconstruction:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + restart)
        x = (lo + (hi - lo) * torch.rand((1, *input_shape), generator=gen)).requires_grad_(True)
        losses = (_run_dlg(x, objective, steps, step_size or 1.0) if method == "dlg"
                  else _run_ig(x, objective, steps, step_size or 0.1, bounds))
        image = x.detach().clamp(lo, hi)[0].numpy().astype(np.float32)
        return Reconstruction(image, label, tuple(losses), method, restart)

    # A diverged (NaN) run never wins.
    return min((one(r) for r in range(restarts)),
               key=lambda c: c.final_loss if math.isfinite(c.final_loss) else math.inf)


Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _run_dlg(x: torch.Tensor, objective: Objective, steps: int, step_size: float) -> list[float]:
    opt = torch.optim.LBFGS([x], lr=step_size, max_iter=20, history_size=100,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        obj, _ = objective(x)
        (x.grad,) = torch.autograd.grad(obj, [x])
        return obj.detach()

    losses = [float(objective(x)[1].detach())]
    for _ in range(steps):
        opt.step(closure)
        losses.append(float(objective(x)[1].detach()))
    return losses


def _run_ig(x: torch.Tensor, objective: Objective, steps: int, step_size: float,
            bounds: tuple[float, float]) -> list[float]:
    opt = torch.optim.Adam([x], lr=step_size)
    # Geiping et al.: decay by 10 at 3/8, 5/8 and 7/8 of the run.
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)
    losses = []
    for _ in range(steps):
        obj, match = objective(x)
        (grad,) = torch.autograd.grad(obj, [x])
        x.grad = grad.sign()  # signed gradients, as in the paper's implementation
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(*bounds)
        losses.append(float(match.detach()))
    losses.append(float(objective(x)[1].detach()))
    return losses


def psnr(x: np.ndarray, x_hat: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(range² / MSE); inf when equal."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {x_hat.shape}")
    mse = float(np.mean((x - x_hat) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)
