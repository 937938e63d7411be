"""Run the benchmarks and write benchmarks/RESULTS.md.

    python -m benchmarks            # full
    python -m benchmarks --quick    # fewer rounds and repeats
    python -m benchmarks --only overhead

Each benchmark module exposes ``main(argv) -> dict`` and ``report(dict) -> str``.
Speed is compared side by side in one run, as ratios, because machines are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

BENCHMARKS = {
    "overhead": "Framework overhead: rayfed vs a plain PyTorch loop (issue #2)",
    "dp_overhead": "DP-SGD step vs non-private step, per-sample-gradient modes (issue #3)",
    "secure_agg": "Secure aggregation: CKKS round vs plaintext round, and the floor (issue #4)",
    "compression": "Compression: uploaded bytes and final int8 models (issue #5)",
    "ddp_amp": "Ray Train DDP: AMP vs fp32 samples/s, Ray Train vs torchrun (issue #7)",
    "offload_decision": "Offloading: scheduler decision overhead per task (issue #6)",
}
PACKAGES = ("rayfed-learn", "ray", "torch", "numpy", "opacus", "tenseal", "mlflow",
            "hydra-core")


def machine() -> str:
    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    mem = psutil.virtual_memory().total / 2**30
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, GPU: {gpu}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def versions() -> str:
    out = []
    for p in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{p} {version(p)}")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    args = ap.parse_args()
    names = args.only or list(BENCHMARKS)
    command = "python -m benchmarks " + " ".join(sys.argv[1:])
    sections = [
        "# Benchmark results",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command.strip()}`.",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions()}",
        "",
    ]
    raw = {}
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        argv = ["--quick"] if args.quick else []
        print(f"running {name} …", flush=True)
        result = module.main(argv)
        raw[name] = result
        sections += [f"## {BENCHMARKS[name]}", "",
                     f"Command: `python -m benchmarks.{name} {' '.join(argv)}`".rstrip() + "",
                     "", module.report(result), ""]
    Path(args.out).write_text("\n".join(sections))
    Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
