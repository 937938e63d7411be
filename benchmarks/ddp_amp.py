"""AMP and launchers: samples per second of a CNN on CIFAR-10-shaped inputs.

Run: ``python -m benchmarks.ddp_amp [--quick] [--torchrun] [--cifar-root DIR]``.

Three comparisons, each side by side in one process because machines are noisy:

1. **loop**: rayfed's shared training loop in this process (no Ray), fp32 vs
   bf16 on CPU; on CUDA also fp16 (GradScaler), each with TF32 off and on.
2. **job**: the Ray Train DDP job (``rayfed.train.job``, 2 workers) at each
   precision: gloo on CPU, NCCL with one GPU per worker on CUDA.
3. **launchers** (CUDA, or ``--torchrun`` on CPU): Ray Train against ``torchrun``
   on the same script (``benchmarks/ddp_script.py``). Issue 7 asks for ≤ 5%.

Data: CIFAR-10 from ``--cifar-root`` if the files are there, else synthetic
tensors of CIFAR-10's shape; every row says which. Synthetic data measures
throughput only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayfed.config import DatasetConfig
from rayfed.models import ModelSpec, build_model
from rayfed.train import make_optimizer, train_epoch
from rayfed.train.precision import amp_plan, make_grad_scaler, set_tf32
from rayfed.train.workload import DataSource

SCRIPT = Path(__file__).with_name("ddp_script.py")
CHANNELS = (32, 64)


def _variants(cuda: bool) -> list[tuple[str, bool]]:
    if not cuda:
        return [("fp32", False), ("bf16", False)]
    return [(p, tf32) for p in ("fp32", "bf16", "fp16") for tf32 in (False, True)]


def loop_throughput(precision: str, *, tf32: bool, batch_size: int, steps: int, repeats: int,
                    cifar_root: str | None) -> dict[str, Any]:
    """Median samples/s of ``steps`` steps of the shared loop on this process's device."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        set_tf32(tf32)
    amp = amp_plan(precision, device)
    work = DataSource(DatasetConfig(name="cifar10", root=cifar_root), synthetic_if_missing=True,
                      synthetic_examples=batch_size * steps, seed=0).load()
    x = torch.from_numpy(work.x_train[: batch_size * steps])
    y = torch.from_numpy(work.y_train[: batch_size * steps])
    if cuda:
        x, y = x.pin_memory(), y.pin_memory()
    model = build_model(ModelSpec("cnn", work.input_shape, 10, channels=CHANNELS), seed=0)
    model = model.to(device)
    optimizer = make_optimizer(model.parameters(), name="sgd", lr=0.01, momentum=0.9)
    scaler = make_grad_scaler(amp)
    batches = [(x[i: i + batch_size], y[i: i + batch_size]) for i in range(0, len(x), batch_size)]
    train_epoch(model, batches[:3], optimizer, device=device, autocast_dtype=amp.autocast_dtype,
                scaler=scaler)  # warm-up: kernels, autotuning, allocator
    rates = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        stats = train_epoch(model, batches, optimizer, device=device,
                            autocast_dtype=amp.autocast_dtype, scaler=scaler)
        if cuda:
            torch.cuda.synchronize()
        rates.append(stats.num_examples / (time.perf_counter() - started))
    return {"samples_per_second": float(np.median(rates)), "data": work.source}


def job_throughput(precision: str, *, tf32: bool, workers: int, epochs: int, batch_size: int,
                   examples: int, cifar_root: str | None, tmp: Path) -> dict[str, Any]:
    """The DDP job's own ``samples_per_second`` (steady state, all ranks)."""
    from rayfed.train.config import TrainJobConfig, check_train_job
    from rayfed.train.job import run_training

    cuda = torch.cuda.is_available()
    job = TrainJobConfig(name=f"bench-{precision}-{'tf32' if tf32 else 'ieee'}",
                         output_dir=str(tmp / f"out-{precision}-{tf32}"))
    job.dataset = DatasetConfig(name="cifar10", root=cifar_root)
    job.model.name, job.model.channels = "cnn", list(CHANNELS)
    t = job.train
    t.num_workers, t.use_gpu, t.precision, t.tf32 = workers, cuda, precision, tf32
    t.epochs, t.batch_size, t.lr, t.momentum = epochs, batch_size, 0.01, 0.9
    t.synthetic_if_missing, t.synthetic_examples = True, examples
    t.resources_per_worker = {"CPU": 1, "GPU": 1} if cuda else {"CPU": 1}
    t.storage_path = str(tmp / "runs")
    job.tracking.enabled = False
    s = run_training(check_train_job(job))
    return {"samples_per_second": s["samples_per_second"], "data": s["data"], "tf32": s["tf32"]}


def raytrain_script(*, workers: int, **kwargs: Any) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(config: dict[str, Any]) -> dict[str, Any]:
        sys.path.insert(0, str(SCRIPT.parent))
        from ddp_script import run

        return run(**config)  # rank 0's return value becomes Result.return_value

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        result = TorchTrainer(loop, train_loop_config=kwargs,  # type: ignore[arg-type]
                              scaling_config=ScalingConfig(num_workers=workers, use_gpu=cuda),
                              run_config=RunConfig(storage_path=tmp)).fit()
    out: dict[str, Any] = getattr(result, "return_value")  # noqa: B009 (v2 Result)
    return out


def torchrun_script(*, workers: int, precision: str, tf32: bool, epochs: int, batch_size: int,
                    examples: int, cifar_root: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={workers}", str(SCRIPT), "--precision", precision,
               "--epochs", str(epochs), "--batch-size", str(batch_size),
               "--examples", str(examples), "--out", str(out)]
        cmd += ["--tf32"] if tf32 else []
        cmd += ["--cifar-root", cifar_root] if cifar_root else []
        env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=1800)
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cifar-root", default=None)
    ap.add_argument("--torchrun", action="store_true",
                    help="also compare Ray Train with torchrun without CUDA")
    ap.add_argument("--skip-job", action="store_true")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    batch = 256 if cuda else 64
    steps, repeats, epochs = (20, 3, 2) if args.quick else (50, 5, 3)
    examples = batch * args.workers * (20 if args.quick else 50)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                           "torch_threads": torch.get_num_threads(), "batch_size": batch,
                           "workers": args.workers, "loop": {}, "job": {}, "launchers": {}}
    for precision, tf32 in _variants(cuda):
        key = f"{precision}{'+tf32' if tf32 else ''}"
        out["loop"][key] = loop_throughput(precision, tf32=tf32, batch_size=batch, steps=steps,
                                           repeats=repeats, cifar_root=args.cifar_root)
    if not args.skip_job or cuda or args.torchrun:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=max(args.workers, os.cpu_count() or 1), include_dashboard=False,
                     log_to_driver=False)
    if not args.skip_job:
        with tempfile.TemporaryDirectory() as tmp:
            for precision, tf32 in _variants(cuda):
                key = f"{precision}{'+tf32' if tf32 else ''}"
                out["job"][key] = job_throughput(
                    precision, tf32=tf32, workers=args.workers, epochs=epochs,
                    batch_size=batch, examples=examples, cifar_root=args.cifar_root,
                    tmp=Path(tmp))
    if cuda or args.torchrun:
        for precision in ("fp32", "bf16"):
            kw = {"precision": precision, "tf32": False, "epochs": epochs, "batch_size": batch,
                  "examples": examples, "cifar_root": args.cifar_root}
            ray_r = raytrain_script(workers=args.workers, **kw)
            torch_r = torchrun_script(workers=args.workers, **kw)
            out["launchers"][precision] = {
                "ray_train": ray_r["samples_per_second"], "torchrun": torch_r["samples_per_second"],
                "ray_over_torchrun": ray_r["samples_per_second"] / torch_r["samples_per_second"],
                "data": ray_r["data"]}
    return out


def report(out: dict[str, Any]) -> str:
    lines = [f"Device: {out['device']}; batch {out['batch_size']} per worker; CNN (32, 64 "
             f"channels) on 3×32×32 inputs.", ""]
    for section, title in (("loop", "shared loop, one process"),
                           ("job", f"Ray Train DDP job, {out['workers']} workers")):
        rows = out[section]
        if not rows:
            continue
        base = rows.get("fp32", {}).get("samples_per_second")
        lines += [f"**{title}**", "", "| precision | samples/s | × fp32 | data |",
                  "|---|---:|---:|---|"]
        for key, r in rows.items():
            ratio = r["samples_per_second"] / base if base else float("nan")
            lines.append(f"| {key} | {r['samples_per_second']:.0f} | {ratio:.2f} | {r['data']} |")
        lines.append("")
    if out["launchers"]:
        lines += ["**Ray Train vs torchrun, same script**", "",
                  "| precision | Ray Train samples/s | torchrun samples/s | ratio |",
                  "|---|---:|---:|---:|"]
        for key, r in out["launchers"].items():
            lines.append(f"| {key} | {r['ray_train']:.0f} | {r['torchrun']:.0f} | "
                         f"{r['ray_over_torchrun']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
