"""Where a participant trains, and in which precision: a decision made once per actor.

``participant.device=auto`` takes CUDA when the actor was given a GPU
(``runtime.num_gpus_per_actor``; Ray sets ``CUDA_VISIBLE_DEVICES``) and CPU
otherwise, saying so once; ``cuda`` without one is an error naming the key.
``participant.precision`` becomes an :class:`~rayfed.train.precision.AmpPlan`
(autocast dtype, loss scaler) for that device: mixed precision as in
Micikevicius et al. 2018, reusing the DDP job's AMP code. Pure: tests pass
``cuda_available`` instead of needing a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rayfed.errors import ConfigError
from rayfed.train.precision import AmpPlan, amp_plan


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cpu" or "cuda"
    amp: AmpPlan
    # A line for the log when auto fell back to CPU.
    note: str | None = None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return self.amp.autocast_dtype


def device_plan(requested: str, *, precision: str, cuda_available: bool) -> DevicePlan:
    """The device and AMP plan for ``participant.device=requested``."""
    note = None
    if requested == "cuda" and not cuda_available:
        raise ConfigError(["participant.device=cuda, but this participant's actor sees no "
                           "CUDA device; give actors GPUs (runtime.num_gpus_per_actor, e.g. "
                           "0.25) on a node that has them, or set participant.device=auto"])
    if requested == "auto":
        device = "cuda" if cuda_available else "cpu"
        if not cuda_available:
            note = ("participant.device=auto: no CUDA device in this actor, training on CPU"
                    + (f" (participant.precision={precision} autocasts on CPU)"
                       if precision != "fp32" else ""))
    else:
        device = requested
    return DevicePlan(device, amp_plan(precision, torch.device(device)), note)
