"""Run the benchmarks and write benchmarks/RESULTS.md.

    python -m benchmarks            # full
    python -m benchmarks --quick    # fewer rounds and repeats
    python -m benchmarks --only overhead
    python -m benchmarks --no-peers # without Flower / pfl-research (no venvs built)

Flower and pfl-research run in venvs that ``benchmarks/peers/venvs.py`` builds
once under ~/.cache/rayfed-bench/venvs (see benchmarks/README.md).

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
    "offload_policies": "Offloading: policies' makespan against the lower bound (issue #6)",
    "federated_round": "Federated round time: rayfed vs the loop, Flower and pfl-research "
                       "(issue #10)",
    "scale": "Scale curve: round time and peak memory vs participants per round (issue #10)",
    "robustness": "Byzantine robustness: accuracy under five attacks, FedAvg vs median, "
                  "trimmed mean and Krum (issue #9)",
    "time_to_result": "Time to result through the command line: launch to exit, with the "
                      "breakdown (issue #18)",
    "private_round": "Private rounds: central_dp and local_dp vs non-private, rayfed vs "
                     "pfl-research's central DP (issue #18)",
    "l1_memory": "Memory per process over rounds: the L1 warm-up explained (issue #18)",
    "large_model": "A realistic model: resnet_gn (2.8 M parameters) on per-site "
                   "CIFAR-10-shaped files, rayfed vs the loop, memory per actor (issue #16)",
}
# Benchmarks whose command line takes --no-peers.
TAKES_NO_PEERS = ("federated_round", "time_to_result", "private_round")
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


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def split_sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """A RESULTS.md as (header lines, {section title: its lines}), the closing
    "All benchmarks took" line dropped."""
    header: list[str] = []
    sections: dict[str, list[str]] = {}
    current = header
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif line.startswith("All benchmarks took"):
            continue
        else:
            current.append(line)
    return header, sections


def merge(out: Path, new: dict[str, list[str]], raw: dict[str, object], *, command: str,
          took_s: float) -> None:
    """Replace (or add) only the sections in ``new``; every other section of the
    existing ``out`` and its .json is kept as it was generated."""
    header, sections = split_sections(out.read_text())
    while header and not header[-1].strip():
        header.pop()
    header += [f"- Sections {', '.join(f'`{k}`' for k in raw)} re-run "
               f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command.strip()}` "
               f"in {took_s:.0f} s; load average at its end: {load()}.", ""]
    titles = {BENCHMARKS[k]: k for k in raw}
    sections.update({BENCHMARKS[k]: body for k, body in new.items()})
    order = [BENCHMARKS[k] for k in BENCHMARKS if BENCHMARKS[k] in sections]
    order += [t for t in sections if t not in order and t not in titles]
    lines = list(header)
    for title in order:
        body = sections[title]
        while body and not body[-1].strip():
            body = body[:-1]
        lines += [f"## {title}", *body, ""]
    out.write_text("\n".join(lines))
    js = out.with_suffix(".json")
    old = json.loads(js.read_text()) if js.exists() else {}
    js.write_text(json.dumps({**old, **raw}, indent=2, default=str))


def run(argvs: dict[str, list[str]], *, out: Path, command: str,
        merge_into: bool = False) -> dict[str, object]:
    """Run each named benchmark with its argv; write ``out`` (.md) and its .json.
    ``merge_into``: keep the other sections of an existing ``out`` (``--only``)."""
    t0 = time.perf_counter()
    new: dict[str, list[str]] = {}
    sections = [
        "# Benchmark results",
        "",
        "Generated, not hand-written: "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command.strip()}`.",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions()}",
        f"- Load average at the start: {load()}. Other processes on the machine share its "
        "cores; a load well above the core count makes every absolute time here slower.",
        "",
    ]
    raw: dict[str, object] = {}
    for name, argv in argvs.items():
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"running {name} {' '.join(argv)} …", flush=True)
        t = time.perf_counter()
        try:
            result = module.main(argv)
            body = module.report(result)
        except Exception as exc:  # one broken benchmark must not lose the others' results
            result = {"error": f"{type(exc).__name__}: {exc}"}
            body = f"not run: failed with {result['error']}"
            print(f"  {name} failed: {result['error']}", flush=True)
        raw[name] = result
        new[name] = ["", f"Command: `python -m benchmarks.{name} {' '.join(argv)}`".rstrip(),
                     "", body, ""]
        sections += [f"## {BENCHMARKS[name]}", *new[name]]
        print(f"  {name} took {time.perf_counter() - t:.0f} s", flush=True)
    if merge_into and out.exists():
        merge(out, new, raw, command=command, took_s=time.perf_counter() - t0)
        print(f"merged {', '.join(raw)} into {out}", flush=True)
        return raw
    sections += [f"All benchmarks took {time.perf_counter() - t0:.0f} s; load average at the "
                 f"end: {load()}.", ""]
    out.write_text("\n".join(sections))
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str))
    print(f"wrote {out}", flush=True)
    return raw


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    ap.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    ap.add_argument("--no-peers", action="store_true",
                    help="skip Flower and pfl-research (their rows say 'not run')")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    args = ap.parse_args(argv)
    argvs = {}
    for name in args.only or list(BENCHMARKS):
        argvs[name] = (["--quick"] if args.quick else []) + (
            ["--no-peers"] if args.no_peers and name in TAKES_NO_PEERS else [])
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    # --only replaces those sections and keeps the others (a full run rewrites all).
    run(argvs, out=Path(args.out), command=command, merge_into=bool(args.only))


if __name__ == "__main__":
    main()
