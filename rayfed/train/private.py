"""DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") across DDP ranks.

Opacus's distributed support does the two things that make DP-SGD under DDP
correct: ``DifferentiallyPrivateDistributedDataParallel`` with the distributed
DP optimizer clips per-sample gradients on every rank but adds the Gaussian
noise on rank 0 only, before the gradients are summed, so the global batch gets
noise once (σ·C), not once per rank (which would be √world_size times too
much). Its distributed Poisson sampler gives each rank a disjoint shard of the
indices. ε is computed from a :class:`~rayfed.privacy.accounting.DpEvent` by
the privacy ledger's accountant, never by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rayfed.privacy.accounting import DpEvent, epsilon, solve_noise_multiplier
from rayfed.privacy.config import PrivacyConfig
from rayfed.privacy.plan import default_delta


@dataclass(frozen=True)
class DPPlan:
    noise_multiplier: float
    clipping_norm: float
    delta: float
    # q of the Poisson sampler; one epoch is 1/q steps.
    sample_rate: float
    steps_per_epoch: int
    accountant: str = "rdp"
    secure_mode: bool = False

    def epsilon(self, steps: int) -> float:
        event = DpEvent(sample_rate=self.sample_rate, noise_multiplier=self.noise_multiplier,
                        steps=steps)
        return epsilon([event], delta=self.delta, accountant=self.accountant)  # type: ignore[arg-type]


def dp_sample_rate(num_examples: int, *, num_workers: int, batch_size: int) -> float:
    """q as Opacus derives it: 1 / (batches per epoch of the rank's loader).

    A rank's loader holds ⌈n / world⌉ examples (DistributedSampler) in batches of
    ``batch_size``; the expected global batch is then about ``world · batch_size``.
    """
    per_rank = math.ceil(num_examples / num_workers)
    return 1.0 / max(1, math.ceil(per_rank / batch_size))


def plan_dp(privacy: PrivacyConfig, *, num_examples: int, num_workers: int, batch_size: int,
            epochs: int) -> DPPlan:
    """σ as given, or solved so that ``epochs`` epochs spend ``privacy.target_epsilon``."""
    q = dp_sample_rate(num_examples, num_workers=num_workers, batch_size=batch_size)
    steps_per_epoch = round(1.0 / q)
    delta = privacy.delta if privacy.delta is not None else default_delta(num_examples)
    sigma = privacy.noise_multiplier
    if sigma is None:
        if privacy.target_epsilon is None:
            raise ValueError("set privacy.target_epsilon or privacy.noise_multiplier")
        sigma = solve_noise_multiplier(target_epsilon=privacy.target_epsilon, delta=delta,
                                       sample_rate=q, steps=epochs * steps_per_epoch,
                                       accountant=privacy.accountant)  # type: ignore[arg-type]
    return DPPlan(noise_multiplier=sigma, clipping_norm=privacy.clipping_norm, delta=delta,
                  sample_rate=q, steps_per_epoch=steps_per_epoch,
                  accountant=privacy.accountant, secure_mode=bool(privacy.secure_rng))


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer,
                 loader: torch.utils.data.DataLoader, plan: DPPlan, *, distributed: bool,
                 noise_generator: torch.Generator | None) -> tuple[nn.Module, Any, Any]:
    """Wrap for DP-SGD; under DDP, ``model`` must not be DDP-wrapped yet."""
    from opacus import PrivacyEngine
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

    module = DPDDP(model) if distributed else model
    engine = PrivacyEngine(accountant="rdp", secure_mode=plan.secure_mode)
    module, dp_optimizer, dp_loader = engine.make_private(
        module=module, optimizer=optimizer, data_loader=loader,
        noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.clipping_norm,
        poisson_sampling=True,
        noise_generator=None if plan.secure_mode else noise_generator)
    q = 1.0 / len(dp_loader)
    if abs(q - plan.sample_rate) > 1e-12:
        raise RuntimeError(f"Opacus samples at q={q:.6g} but ε was planned for "
                           f"q={plan.sample_rate:.6g}; the loader and dp_sample_rate disagree")
    return module, dp_optimizer, dp_loader


def attach_noise_probe(optimizer: Any, record: Callable[[float], None]) -> None:
    """Call ``record(‖noise this rank added‖₂)`` at every DP step.

    The hook runs after noise and scaling and before the all-reduce, so
    ``grad · expected_batch_size − summed_grad`` is this rank's noise. A rank that
    adds none sets ``grad`` to a view of ``summed_grad`` (then scaled in place,
    both together): sharing storage means exactly zero noise. Opacus's own
    accounting hook keeps running after this one.
    """
    previous = optimizer.step_hook

    def probe(opt: Any) -> None:
        scale = opt.expected_batch_size * opt.accumulated_iterations
        sq = 0.0
        for p in opt.params:
            if p.grad is None or p.summed_grad is None:
                continue
            same = p.grad.untyped_storage().data_ptr() == p.summed_grad.untyped_storage().data_ptr()
            if not same:
                noise = p.grad.detach() * scale - p.summed_grad.view_as(p)
                sq += float(noise.double().pow(2).sum())
        record(math.sqrt(sq))
        if previous is not None:
            previous(opt)

    optimizer.attach_step_hook(probe)
