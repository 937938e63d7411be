"""Record-level DP-SGD for many participants at once, vectorised with ``torch.func``.

The mechanism is :mod:`rayfed.privacy.dpsgd`'s (Abadi et al. 2016, "Deep Learning
with Differential Privacy"), computed for a pooled actor's whole group of
participants in one loop instead of one Opacus engine per participant:

* **Sampling**: Poisson, each example joins a step with probability
  q = batch_size / n, drawn as :func:`~rayfed.privacy.dpsgd.poisson_batches`
  draws it (one ``torch.rand(n)`` per step from the participant's seeded
  generator), so a seeded run samples the very same batches. The variable batch
  sizes are padded to the group's largest and masked.
* **Per-sample gradients**: ``grad`` of one example's loss through
  ``functional_call``, ``vmap``-ed over the examples and then over the
  participants (the recipe of torch.func's per-sample-gradients tutorial, which
  Opacus's ``functorch`` grad-sample mode applies layer by layer). A model that
  is a chain of linear layers (``logreg``, ``mlp``) never builds them: its norms
  and clipped sums come from ghost clipping (:mod:`rayfed.privacy.ghost_clipping`).
* **Clipping**: Opacus's flat clipping, factor min(1, C / (‖g_i‖ + 1e-6)) with the
  norm over all parameters, computed per parameter and then stacked as
  ``DPOptimizer.clip_and_accumulate`` does.
* **Noise**: per participant and step, N(0, σ²C²) per coordinate added to the sum
  of clipped gradients, drawn from the participant's own generator parameter by
  parameter with Opacus's own call, then divided by the expected batch size
  max(1, round(q·n)) (``DPOptimizer``'s calibration under Poisson sampling).
* **Step**: SGD with weight decay; FedProx's μ(w − w_global) added after the
  noise (it depends only on public weights), as the sequential path's step hook.

One deliberate difference from the sequential path: a step whose Poisson batch
is empty still takes its noisy step, as Opacus's ``DPDataLoader`` with
``DPOptimizer`` do. :func:`rayfed.train.loop.train_epoch` skips empty batches,
so there an empty batch (probability (1−q)^n, about e^−batch_size) adds no noise
at all, which the accountant does not model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from rayfed.privacy.ghost_clipping import ghost_clipped_sum, linear_chain
from rayfed.train.loop import Optimization
from rayfed.train.vectorized import why_not_vectorizable

if TYPE_CHECKING:  # dpsgd imports Opacus (about a second); only its plan's fields are read
    from rayfed.privacy.dpsgd import RecordLevelPlan

# Opacus's DPOptimizer adds this to every per-sample norm before dividing.
CLIP_EPS = 1e-6
# Per-sample gradients of a group take group × batch × num_params floats.
DEFAULT_MAX_GRAD_BYTES = 256 * 2**20


def why_not_vectorizable_dp(opt: Optimization, model: nn.Module) -> str | None:
    """``None`` if :func:`train_vectorized_dp` computes what the Opacus path does."""
    reason = why_not_vectorizable(opt, model)
    if reason is not None:
        return reason
    if any(not p.requires_grad for p in model.parameters()):
        return "the model has frozen parameters, which Opacus leaves out of the clipping norm"
    for m in model.modules():
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks:
            return ("the model carries hooks (Opacus's GradSampleModule hooks the module it "
                    "wraps); pass a copy of the model taken before wrapping")
    return None


@dataclass(frozen=True)
class PrivateLocalResult:
    """One participant's private local round.

    ``sample_rate``, ``noise_multiplier`` and ``steps`` are the mechanism that ran:
    the event ``DpEvent(sample_rate, noise_multiplier, steps)`` the host charges.
    """

    delta: torch.Tensor
    # Mean per-example loss over the examples the Poisson batches drew.
    loss: float
    num_examples: int
    sample_rate: float
    noise_multiplier: float
    steps: int
    examples_seen: int


def steps_per_round(sample_rate: float, epochs: int) -> int:
    """Steps of one round: 1/q Poisson batches per epoch, as ``RecordLevelSession.batches``."""
    return epochs * max(1, math.ceil(1.0 / sample_rate - 1e-9))


def per_sample_grads(
    model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """∇ℓ(w_p; x_pb, y_pb) for participant p's weights and its b-th example.

    ``params``: ``(P, *shape)`` per name; ``x``: ``(P, B, *input)``. Returns the
    gradients, ``(P, B, *shape)`` per name, and the losses ``(P, B)``.
    """

    def example_loss(w: dict[str, torch.Tensor], xi: torch.Tensor,
                     yi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = F.cross_entropy(functional_call(model, w, (xi.unsqueeze(0),)), yi.unsqueeze(0))
        return loss, loss.detach()

    per_example = vmap(grad(example_loss, has_aux=True), in_dims=(None, 0, 0))
    grads, losses = vmap(per_example)(params, x, y)
    return grads, losses


def clip_factors(grads: dict[str, torch.Tensor], valid: torch.Tensor, *,
                 max_grad_norm: torch.Tensor) -> torch.Tensor:
    """min(1, C / (‖g_pb‖ + 1e-6)) per example, 0 for padding; ``(P, B)``.

    The norm is over all parameters (Opacus's flat clipping), taken per parameter
    and then over the stack as ``DPOptimizer`` takes it. ``max_grad_norm``: ``(P,)``.
    """
    lead = valid.shape
    per_param = [g.reshape(*lead, -1).norm(2, dim=-1) for g in grads.values()]
    norms = torch.stack(per_param, dim=-1).norm(2, dim=-1)
    return (max_grad_norm[:, None] / (norms + CLIP_EPS)).clamp(max=1.0) * valid


def clipped_sum(grads: dict[str, torch.Tensor], factors: torch.Tensor) -> torch.Tensor:
    """Σ_b factor_pb · g_pb per participant, flattened in parameter order: ``(P, D)``."""
    return torch.cat([torch.einsum("pb,pb...->p...", factors, g).reshape(len(factors), -1)
                      for g in grads.values()], dim=1)


def gaussian_noise(shapes: Sequence[torch.Size], *, std: float,
                   generator: torch.Generator) -> torch.Tensor:
    """N(0, std²) per coordinate, flat, drawn one parameter at a time with
    Opacus's ``_generate_noise`` call (not secure mode): from the same generator
    state, the same numbers as ``DPOptimizer.add_noise``."""
    if std == 0:  # Opacus draws nothing then, leaving the generator where it was
        return torch.zeros(sum(math.prod(s) for s in shapes))
    return torch.cat([torch.normal(mean=0, std=std, size=tuple(s), generator=generator,
                                   dtype=torch.float32).reshape(-1) for s in shapes])


def train_vectorized_dp(
    model: nn.Module,
    global_weights: torch.Tensor,
    shards: Sequence[tuple[torch.Tensor, torch.Tensor]],
    seeds: Sequence[int],
    noise_generators: Sequence[torch.Generator],
    plans: Sequence[RecordLevelPlan],
    opt: Optimization,
    *,
    max_group: int = 64,
    max_grad_bytes: int = DEFAULT_MAX_GRAD_BYTES,
    ghost: bool = True,
) -> list[PrivateLocalResult]:
    """One private local round of every shard from ``global_weights`` (flat).

    ``seeds``: the Poisson sampling seed per participant (the sequential path's
    ``FitIns.seed``); ``noise_generators``: one per participant, the caller's
    (seeded, or from the OS CSPRNG under ``privacy.secure_rng``), never global
    state; ``plans``: each participant's :class:`RecordLevelPlan` (σ, C, q, steps).
    ``model`` only supplies the architecture. Groups are at most ``max_group``
    participants and small enough that their per-sample gradients fit in
    ``max_grad_bytes``. ``ghost``: a model that is a chain of linear layers gets
    its clipped sums by ghost clipping (:mod:`rayfed.privacy.ghost_clipping`);
    False computes the per-sample gradients for every model (tests compare both).
    """
    reason = why_not_vectorizable_dp(opt, model)
    if reason is not None:
        raise ValueError(f"vectorised DP-SGD does not apply: {reason}")
    if not len(shards) == len(seeds) == len(noise_generators) == len(plans):
        raise ValueError(f"{len(shards)} shards, {len(seeds)} seeds, {len(noise_generators)} "
                         f"noise generators and {len(plans)} plans: give one of each per shard")
    for plan in plans:
        planned = steps_per_round(plan.sample_rate, opt.epochs)
        if planned != plan.steps_per_round:
            raise ValueError(f"the plan charges {plan.steps_per_round} steps but fl.local_epochs="
                             f"{opt.epochs} at q={plan.sample_rate:.4g} runs {planned}; "
                             "the plan was made for another fl.local_epochs")
    num_params = sum(p.numel() for p in model.parameters())
    # A step's batch is about batch_size and rarely above twice that.
    per_participant = 4 * num_params * (2 * opt.batch_size + 8)
    group = max(1, min(max_group, max_grad_bytes // per_participant))
    out: list[PrivateLocalResult] = []
    for s in range(0, len(shards), group):
        window = slice(s, s + group)
        out.extend(_train_group(model, global_weights, shards[window], seeds[window],
                                noise_generators[window], plans[window], opt, ghost=ghost))
    return out


def _poisson_masks(counts: Sequence[int], rates: Sequence[float], steps: Sequence[int],
                   seeds: Sequence[int]) -> torch.Tensor:
    """``(P, T, n_max)``: example j of participant p in step t's batch."""
    chosen = torch.zeros(len(counts), max(steps), max(counts), dtype=torch.bool)
    for p, (n, q, t_p, seed) in enumerate(zip(counts, rates, steps, seeds, strict=True)):
        gen = torch.Generator().manual_seed(int(seed))
        for t in range(t_p):
            chosen[p, t, :n] = torch.rand(n, generator=gen) < q
    return chosen


def _train_group(
    model: nn.Module,
    global_weights: torch.Tensor,
    shards: Sequence[tuple[torch.Tensor, torch.Tensor]],
    seeds: Sequence[int],
    noise_generators: Sequence[torch.Generator],
    plans: Sequence[RecordLevelPlan],
    opt: Optimization,
    *,
    ghost: bool,
) -> list[PrivateLocalResult]:
    num = len(shards)
    names, shapes = zip(*((n, p.shape) for n, p in model.named_parameters()), strict=True)
    sizes = [s.numel() for s in shapes]
    w0 = global_weights.to(torch.float32)
    flat = w0.expand(num, -1).clone()
    counts = [len(x) for x, _ in shards]
    rates = [p.sample_rate for p in plans]
    steps = [p.steps_per_round for p in plans]
    # DPOptimizer's denominator: the expected, not the drawn, batch size.
    expected = torch.tensor([max(1, round(q * n)) for q, n in zip(rates, counts, strict=True)],
                            dtype=torch.float32)[:, None]
    stds = [p.noise_multiplier * p.max_grad_norm for p in plans]
    clip = torch.tensor([p.max_grad_norm for p in plans], dtype=torch.float32)

    def views(stacked: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(stacked, sizes, dim=-1)
        return {n: t.view(len(stacked), *s) for n, t, s in zip(names, parts, shapes, strict=True)}

    # A chain of linear layers: per-sample norms and clipped sums without the
    # per-sample gradients (ghost clipping); any other model: vmap-ed gradients.
    chain = linear_chain(model, tuple(shards[0][0].shape[1:])) if ghost else None
    chosen = _poisson_masks(counts, rates, steps, seeds)
    batch_sizes = chosen.sum(dim=-1)  # (P, T)
    # Stable sort puts each batch's members first, in index order (as x[mask]).
    order = torch.argsort((~chosen).to(torch.int8), dim=-1, stable=True)
    # All shards in one table with a zero row at the end, which padding points at.
    x_all = torch.cat([*(x for x, _ in shards), torch.zeros_like(shards[0][0][:1])])
    y_all = torch.cat([*(y for _, y in shards), torch.zeros_like(shards[0][1][:1])])
    offsets = torch.tensor([0, *counts[:-1]]).cumsum(0)[:, None]
    pad_row = len(x_all) - 1
    loss_sums = torch.zeros(num, dtype=torch.float64)
    for t in range(max(steps)):
        # Only the participants still running: with skewed shards most stop after a
        # step or two while one runs on, and the others' gradients would be discarded.
        active = torch.tensor([p for p, t_p in enumerate(steps) if t < t_p])
        b = batch_sizes[active, t]
        width = max(1, int(b.max()))
        valid = torch.arange(width)[None, :] < b[:, None]
        index = torch.where(valid, order[active, t, :width] + offsets[active], pad_row)
        w = flat[active]
        if chain is not None:
            summed, losses = ghost_clipped_sum(chain, views(w), x_all[index], y_all[index],
                                               valid.to(torch.float32),
                                               max_grad_norm=clip[active])
        else:
            grads, losses = per_sample_grads(model, views(w), x_all[index], y_all[index])
        with torch.no_grad():
            if chain is None:
                factors = clip_factors(grads, valid.to(torch.float32),
                                       max_grad_norm=clip[active])
                summed = clipped_sum(grads, factors)
            noise = torch.stack([gaussian_noise(shapes, std=stds[p], generator=noise_generators[p])
                                 for p in active.tolist()])
            g = (summed + noise) / expected[active]
            if opt.proximal_mu > 0:  # after the noise, as the sequential path's step hook
                g = g + opt.proximal_mu * (w - w0)
            if opt.weight_decay:
                g = g + opt.weight_decay * w
            flat[active] = w - opt.lr * g
            loss_sums[active] += (losses * valid).sum(dim=1).double()
    deltas = flat - w0
    seen = batch_sizes.sum(dim=1)
    return [PrivateLocalResult(deltas[i], float(loss_sums[i]) / max(int(seen[i]), 1), counts[i],
                               rates[i], plans[i].noise_multiplier, steps[i], int(seen[i]))
            for i in range(num)]
