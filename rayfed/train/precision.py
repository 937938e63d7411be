"""Mixed precision as a plan: which autocast dtype, whether a loss scaler, TF32 state.

Automatic mixed precision (Micikevicius et al. 2018, "Mixed Precision
Training") runs the forward pass in a 16-bit dtype under ``torch.autocast``.
fp16's narrow exponent range needs dynamic loss scaling (``GradScaler``); bf16
keeps fp32's range and does not. The decision is a frozen value that tests check
without a GPU; the training loop only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rayfed.errors import ConfigError

if TYPE_CHECKING:  # the config layer imports precision_problems; torch comes with a plan
    import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
# Autocast dtypes, by name of torch's dtype (None: no autocast).
_DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class AmpPlan:
    """How one worker runs its steps."""

    precision: str
    device_type: str
    # None: plain fp32, no autocast.
    autocast_dtype: torch.dtype | None
    use_grad_scaler: bool


def precision_problems(precision: str, *, use_gpu: bool, key: str = "train") -> list[str]:
    """Problems with ``<key>.precision`` for the device it will run on."""
    if precision not in PRECISIONS:
        return [f"{key}.precision={precision!r} is not one of {list(PRECISIONS)}; pick one "
                "of those"]
    if precision == "fp16" and not use_gpu:
        return [f"{key}.precision=fp16 needs CUDA: fp16 autocast on CPU is slow and its "
                f"GradScaler is a CUDA feature; use {key}.precision=bf16 (or fp32) on CPU, "
                f"or set {key}.use_gpu=true on a GPU cluster"]
    return []


def amp_plan(precision: str, device: torch.device) -> AmpPlan:
    """The plan for ``precision`` on ``device``; fp16 on CPU is refused."""
    import torch

    problems = precision_problems(precision, use_gpu=device.type == "cuda")
    if problems:
        raise ConfigError(problems)
    dtype = _DTYPES[precision]
    return AmpPlan(precision=precision, device_type=device.type,
                   autocast_dtype=None if dtype is None else getattr(torch, dtype),
                   use_grad_scaler=precision == "fp16")


def make_grad_scaler(plan: AmpPlan) -> torch.amp.GradScaler | None:
    import torch

    return torch.amp.GradScaler(plan.device_type) if plan.use_grad_scaler else None


def set_tf32(enabled: bool) -> None:
    """Let (or forbid) fp32 matmuls and convolutions run on TF32 tensor cores.

    torch >= 2.9 has per-backend ``fp32_precision``; mixing it with the legacy
    ``allow_tf32`` flags is an error there, so only one API is ever touched.
    """
    import torch

    value = "tf32" if enabled else "ieee"
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = value
        torch.backends.cudnn.conv.fp32_precision = value  # type: ignore[attr-defined]
    else:  # torch < 2.9
        matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def tf32_state() -> dict[str, bool]:
    """Whether fp32 matmuls and cuDNN convolutions may use TF32 right now."""
    import torch

    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        mm = matmul.fp32_precision
        conv = torch.backends.cudnn.conv.fp32_precision  # type: ignore[attr-defined]
        # "none" defers to the legacy global setting.
        mm_on = mm == "tf32" or (mm == "none" and torch.get_float32_matmul_precision() != "highest")
        conv_on = conv == "tf32" or (conv == "none" and torch.backends.cudnn.allow_tf32)
        return {"tf32_matmul": mm_on, "tf32_cudnn": conv_on}
    return {"tf32_matmul": bool(matmul.allow_tf32),
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32)}
