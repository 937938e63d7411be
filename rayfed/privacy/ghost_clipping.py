"""Clipped per-sample gradient sums of a chain of linear layers without the
per-sample gradients ("ghost clipping").

For a linear layer z = W h + b applied to one example, the example's weight
gradient is the outer product g hᵀ of its output gradient g = ∂ℓ/∂z and its
input h, so its squared norm is ‖g‖²‖h‖², and its bias gradient is g
(Goodfellow 2015, "Efficient Per-Example Gradient Computations"; Li, Tramèr,
Liang, Hashimoto 2022, "Large Language Models Can Be Strong Differentially
Private Learners", whose ghost clipping Opacus implements). One forward pass and
one backward pass to the layers' outputs give every example's gradient norm, and
the clipped sum Σ_i c_i g_i h_iᵀ is one batched matrix product: no tensor of
batch × parameters is ever built. :mod:`rayfed.privacy.vectorized_dpsgd` uses
this for models that are such a chain (``logreg``, ``mlp``, any ``nn.Sequential``
of ``Flatten``, ``Linear`` and element-wise activations) and the ``vmap``-ed
per-sample gradients otherwise; a test checks both against each other and
against Opacus to 1e-6.

Everything is stacked over participants: weights ``(P, ...)``, examples
``(P, B, ...)``; each participant's examples meet only its own weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Modules that act on each example on its own and hold no parameters.
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
               nn.Identity)
# Opacus's DPOptimizer adds this to every per-sample norm before dividing.
CLIP_EPS = 1e-6


def linear_chain(model: nn.Module, example_shape: tuple[int, ...]
                 ) -> list[tuple[str, nn.Module]] | None:
    """``model``'s layers with their names if it is a chain ghost clipping covers
    for examples of ``example_shape``: every Linear layer meets one vector per
    example."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model.named_children())
    if not any(isinstance(m, nn.Linear) for _, m in layers):
        return None
    ndim = len(example_shape)
    for _, m in layers:
        if isinstance(m, nn.Flatten):
            if (m.start_dim, m.end_dim) != (1, -1):
                return None
            ndim = 1
        elif isinstance(m, nn.Linear):
            if ndim != 1:
                return None
        elif not isinstance(m, ELEMENTWISE):
            return None
    # The parameters, in the model's order, are exactly the Linear layers' own.
    names = [f"{n}.{p}" for n, m in layers if isinstance(m, nn.Linear)
             for p, _ in m.named_parameters()]
    if names != [n for n, _ in model.named_parameters()]:
        return None
    return layers


def ghost_clipped_sum(
    layers: list[tuple[str, nn.Module]], params: dict[str, torch.Tensor], x: torch.Tensor,
    y: torch.Tensor, valid: torch.Tensor, *, max_grad_norm: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_b c_pb ∇ℓ(w_p; x_pb, y_pb), flat in parameter order ``(P, D)``, and the
    losses ``(P, B)``.

    ``c_pb`` = min(1, C_p / (‖∇ℓ_pb‖ + 1e-6)) for real examples and 0 for padding
    (``valid`` 0), Opacus's flat clipping. ``params``: ``(P, *shape)`` per name.
    Raises ``ValueError`` if a Linear layer meets more than one vector per example
    (a sequence), where ‖g hᵀ‖ ≠ ‖g‖‖h‖.
    """
    num, width = y.shape
    h = x
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    linears: list[tuple[str, nn.Linear]] = []
    with torch.enable_grad():
        for name, m in layers:
            if isinstance(m, nn.Flatten):
                h = h.reshape(num, width, -1)
            elif isinstance(m, nn.Linear):
                if h.dim() != 3:
                    raise ValueError(f"layer {name} gets {tuple(h.shape[2:])} per example, "
                                     "not one vector; ghost clipping needs one")
                z = torch.bmm(h, params[f"{name}.weight"].transpose(1, 2))
                if m.bias is not None:
                    z = z + params[f"{name}.bias"][:, None, :]
                if not outputs:  # the graph starts here: nothing before needs a gradient
                    z = z.detach().requires_grad_(True)
                inputs.append(h.detach())
                outputs.append(z)
                linears.append((name, m))
                h = z
            else:
                h = m(h)
        losses = F.cross_entropy(h.reshape(num * width, -1), y.reshape(-1),
                                 reduction="none").view(num, width)
        # Each example's loss depends on its own rows only: the gradient of the sum
        # is, row by row, every example's own output gradient.
        grads = torch.autograd.grad((losses * valid).sum(), outputs)
    with torch.no_grad():
        sq = torch.zeros(num, width)
        for (_, m), a, g in zip(linears, inputs, grads, strict=True):
            g_sq = g.square().sum(-1)
            sq += g_sq * a.square().sum(-1)
            if m.bias is not None:
                sq += g_sq
        factors = (max_grad_norm[:, None] / (sq.sqrt() + CLIP_EPS)).clamp(max=1.0) * valid
        parts: list[torch.Tensor] = []
        for (_, m), a, g in zip(linears, inputs, grads, strict=True):
            scaled = g * factors[..., None]
            parts.append(torch.bmm(scaled.transpose(1, 2), a).reshape(num, -1))
            if m.bias is not None:
                parts.append(scaled.sum(dim=1))
        return torch.cat(parts, dim=1), losses.detach()
