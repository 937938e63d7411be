"""Virtual environments for the peer frameworks, made once and cached.

Flower's simulation extra pins its own Ray (2.55.1) and pfl pins older
dp-accounting, so neither can share rayfed's environment. Each peer gets a plain
venv under ``~/.cache/rayfed-bench/venvs/<peer>`` (``RAYFED_BENCH_VENVS`` moves it)
with ``torch==2.13.0`` installed first: that is the CPU build on this machine's
disk, and pinning it keeps pip from pulling a CUDA torch. A stamp file records
the requirement list the venv was built from; a venv whose stamp differs is
rebuilt, one whose build failed says why and is retried on the next run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TORCH = "torch==2.13.0"
PEERS: dict[str, tuple[str, ...]] = {
    "flwr": ("flwr[simulation]==1.42.0",),
    "pfl": ("pfl[pytorch]==0.6.0",),
}


@dataclass(frozen=True)
class Venv:
    peer: str
    python: Path | None
    error: str | None = None
    versions: str = ""


def root() -> Path:
    return Path(os.environ.get("RAYFED_BENCH_VENVS",
                               Path.home() / ".cache" / "rayfed-bench" / "venvs"))


def _run(cmd: list[str], log: Path, timeout_s: float) -> None:
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True,
                       timeout=timeout_s)


def _versions(python: Path, peer: str) -> str:
    names = [peer, "torch", "numpy", *(["ray"] if peer == "flwr" else [])]
    probe = ("import importlib.metadata as m; "
             f"print(', '.join(n + ' ' + m.version(n) for n in {names!r}))")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.strip()


def ensure(peer: str, *, timeout_s: float = 1800.0) -> Venv:
    """Build (or reuse) the venv for ``peer``; never raises, returns the reason instead."""
    reqs = PEERS[peer]
    where = root() / peer
    python = where / "bin" / "python"
    stamp = where / "rayfed-bench.json"
    want = {"python": sys.version.split()[0], "requirements": [TORCH, *reqs]}
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == want:
        try:
            return Venv(peer, python, versions=_versions(python, peer))
        except (subprocess.SubprocessError, OSError) as e:
            return Venv(peer, None, error=f"venv {where} is broken ({e}); delete it")
    where.parent.mkdir(parents=True, exist_ok=True)
    log = where.parent / f"{peer}.log"
    log.write_text("")
    print(f"  building the {peer} venv in {where} (log: {log}) …", flush=True)
    t0 = time.perf_counter()
    try:
        stamp.unlink(missing_ok=True)
        _run([sys.executable, "-m", "venv", "--clear", str(where)], log, 300)
        pip = [str(python), "-m", "pip", "install", "-q"]
        _run([*pip, TORCH], log, timeout_s)
        # torch named again so the resolver keeps the local CPU build.
        _run([*pip, TORCH, *reqs], log, timeout_s)
        versions = _versions(python, peer)
        if "torch 2.13.0" not in versions:
            return Venv(peer, None, error=f"wrong torch in {where}: {versions}")
    except (subprocess.SubprocessError, OSError) as e:
        tail = log.read_text()[-600:].replace("\n", " ") if log.exists() else ""
        return Venv(peer, None, error=f"could not build the {peer} venv ({e}): {tail}")
    stamp.write_text(json.dumps(want))
    print(f"  {peer} venv ready in {time.perf_counter() - t0:.0f} s: {versions}", flush=True)
    return Venv(peer, python, versions=versions)


if __name__ == "__main__":
    for name in sys.argv[1:] or PEERS:
        print(ensure(name))
