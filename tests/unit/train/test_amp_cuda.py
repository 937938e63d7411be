"""AMP on a real GPU: fp16 with a GradScaler, bf16, TF32 switches. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rayfed.train import evaluate, make_optimizer, tensor_batches, train_epoch
from rayfed.train.precision import amp_plan, make_grad_scaler, set_tf32, tf32_state

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _blobs(n: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    return (centers[y] + torch.randn(n, 2, generator=g)).pin_memory(), y.pin_memory()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_shared_loop_trains_on_cuda_at_every_precision(precision):
    device = torch.device("cuda", 0)
    plan = amp_plan(precision, device)
    scaler = make_grad_scaler(plan)
    assert (scaler is not None) == (precision == "fp16")
    x, y = _blobs()  # pinned host tensors: the loop copies them non_blocking
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 3)).to(device)
    opt = make_optimizer(model.parameters(), name="sgd", lr=0.1)
    for epoch in range(5):
        g = torch.Generator().manual_seed(epoch)
        batches = tensor_batches(x, y, batch_size=64, generator=g)
        stats = train_epoch(model, batches, opt, device=device, autocast_dtype=plan.autocast_dtype,
                            scaler=scaler)
    assert all(p.is_cuda and p.dtype == torch.float32 for p in model.parameters())
    assert stats.loss < 0.3
    _, acc = evaluate(model, x, y, device=device, autocast_dtype=plan.autocast_dtype)
    assert acc > 0.95


def test_tf32_switch_is_reported():
    set_tf32(True)
    assert tf32_state() == {"tf32_matmul": True, "tf32_cudnn": True}
    set_tf32(False)
    assert tf32_state() == {"tf32_matmul": False, "tf32_cudnn": False}
