"""DP-SGD overhead: one private local step against one non-private step, side by side.

Workload: a participant's local training as rayfed runs it (``train_epoch``,
SGD lr 0.05, batch 32, one torch thread), on the models we train privately:
``mlp`` (64-128-10) on digits and ``cnn1d`` (16, 32 channels) on MNIST-1D. The
non-private side draws shuffled batches of 32; the private side Poisson batches
of expected size 32 (q = 32/n), as DP-SGD needs. Per-sample gradients by:

* ``hooks``: Opacus's default ``GradSampleModule`` (forward/backward hooks);
* ``functorch``: ``grad_sample_mode="functorch"`` (vmap over per-sample grads);
* ``ghost``: ghost clipping (Li et al. 2022; Bu et al. 2022), which computes the
  per-sample norms without materializing per-sample gradients, at the cost of a
  second backward pass (Opacus's ``DPLossFastGradientClipping``).

Each configuration runs ``steps`` steps after a warm-up, ``repeats`` times,
interleaved; the median seconds per step and the ratio to the non-private step
are reported. Run: ``python -m benchmarks.dp_overhead`` (``--quick`` for fewer).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from opacus.grad_sample import wrap_model
from opacus.optimizers import DPOptimizer
from torch import nn

from rayfed.config import DatasetConfig, ModelConfig
from rayfed.data.datasets import load_splits
from rayfed.models import build_model, spec_from_config
from rayfed.privacy.dpsgd import poisson_batches
from rayfed.train import tensor_batches, train_epoch

BATCH, LR = 32, 0.05
WORKLOADS = {"mlp/digits": ("digits", ModelConfig(name="mlp", hidden_sizes=[128])),
             "cnn1d/mnist1d": ("mnist1d", ModelConfig(name="cnn1d", channels=[16, 32]))}
MODES = ("nonprivate", "hooks", "functorch", "ghost")


def _data(dataset: str, n: int = 1024) -> tuple[torch.Tensor, torch.Tensor, Any]:
    cfg = DatasetConfig(name=dataset, num_samples=4000)
    ds, _ = load_splits(cfg.name, root=None, test_fraction=cfg.test_fraction, seed=0,
                        num_samples=cfg.num_samples)
    return torch.from_numpy(ds.x[:n]), torch.from_numpy(ds.y[:n]), ds


def _model(model_cfg: ModelConfig, ds: Any) -> nn.Module:
    spec = spec_from_config(model_cfg, input_shape=ds.input_shape, num_classes=ds.num_classes)
    return build_model(spec, seed=0)


def _time_mode(mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               steps: int) -> float:
    """Seconds per step of ``steps`` steps of ``mode`` (after one warm-up step)."""
    gen = torch.Generator().manual_seed(0)
    q = BATCH / len(x)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    if mode == "nonprivate":
        def run(k: int) -> None:
            batches = (b for i, b in zip(range(k), _cycle(x, y, gen), strict=False))
            train_epoch(model, batches, opt)
    elif mode in ("hooks", "functorch"):
        gsm = wrap_model(model, grad_sample_mode=mode)
        dp = DPOptimizer(opt, noise_multiplier=1.0, max_grad_norm=1.0,
                         expected_batch_size=BATCH, generator=gen)

        def run(k: int) -> None:
            train_epoch(gsm, poisson_batches(x, y, sample_rate=q, steps=k, generator=gen), dp)
    else:
        run = _ghost_runner(model, opt, x, y, q, gen)
    run(1)
    t0 = time.perf_counter()
    run(steps)
    return (time.perf_counter() - t0) / steps


def _cycle(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    while True:
        yield from tensor_batches(x, y, batch_size=BATCH, generator=gen)


def _ghost_runner(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor, q: float, gen: torch.Generator):
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    gsm = GradSampleModuleFastGradientClipping(model, max_grad_norm=1.0, use_ghost_clipping=True)
    dp = DPOptimizerFastGradientClipping(opt, noise_multiplier=1.0, max_grad_norm=1.0,
                                         expected_batch_size=BATCH, generator=gen)
    criterion = DPLossFastGradientClipping(gsm, dp, nn.CrossEntropyLoss(reduction="mean"))

    def run(k: int) -> None:
        gsm.train()
        for xb, yb in poisson_batches(x, y, sample_rate=q, steps=k, generator=gen):
            if len(xb) == 0:
                continue
            dp.zero_grad()
            loss = criterion(gsm(xb), yb)
            loss.backward()
            dp.step()

    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 50, 3
    torch.set_num_threads(1)
    out: dict[str, Any] = {"steps": args.steps, "repeats": args.repeats, "batch_size": BATCH,
                           "results": {}}
    for name, (dataset, model_cfg) in WORKLOADS.items():
        x, y, ds = _data(dataset)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for mode in MODES:  # interleaved, so drift hits every mode alike
                times[mode].append(_time_mode(mode, _model(model_cfg, ds), x, y, args.steps))
        med = {m: statistics.median(v) for m, v in times.items()}
        out["results"][name] = {m: {"s_per_step": med[m], "ratio": med[m] / med["nonprivate"]}
                                for m in MODES}
    return out


def report(out: dict[str, Any]) -> str:
    lines = [f"DP-SGD step vs non-private step (batch {out['batch_size']}, "
             f"{out['steps']} steps × {out['repeats']} repeats, 1 thread, median)", "",
             "| workload | mode | ms/step | × non-private |", "|---|---|---:|---:|"]
    for name, modes in out["results"].items():
        for mode, r in modes.items():
            lines.append(f"| {name} | {mode} | {1e3 * r['s_per_step']:.3f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
