"""Gradient inversion (issue #9 G1): PSNR of what a curious server rebuilds.

Workload: digits (8×8, pixels in [0, 1]) with one training example per
participant (iid over the 1,437-example pool, no validation split), the registry's
``cnn`` (16-32 channels, 22,602 parameters) at its round-1 weights, one local
step of plain SGD with batch 1 and lr 0.1: each update is −0.1·∇L of one example.
The updates come from :class:`rayfed.fl.host.ParticipantHost` (the body of a
participant actor, here without Ray) with the configured pipeline, i.e. the exact
``FitRes.delta`` the server would receive; ``tests/integration/
test_gradient_inversion.py`` checks the same on a real Ray round.

Attack: Inverting Gradients (Geiping et al. 2020; cosine + TV, signed Adam,
200 steps, best of 2 restarts by matching loss), label by iDLG. Scenarios, each
over the same ``--examples`` participants:

* ``unprotected``: the raw update;
* ``clip only``: privacy=central_dp with noise_placement=server: the server
  holds each clipped update (C = 0.5) and adds the noise to the sum itself;
* ``central_dp``: noise_placement=clients, σ = 1, C = 0.5, 5 expected
  participants: each update carries its share N(0, σ²C²/5);
* ``local_dp``: record-level DP-SGD with Opacus, σ = 1, C = 1;
* ``aggregate of 5``: the mean of 5 participants' raw updates, which is all that
  secure_agg=ckks lets the server decrypt (up to 1e-6 flooding noise); scored
  against each of the 5 examples, best one kept (the attacker's best case).

Baseline: the pool's mean image, the best guess without any update.

    python -m benchmarks.gradient_inversion [--examples 10] [--figure docs/img/...png]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from rayfed.adversary.inversion import gradient_from_update, invert_gradient, psnr
from rayfed.config import (
    CheckpointConfig,
    Config,
    DatasetConfig,
    FLConfig,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    RuntimeConfig,
    TrackingConfig,
)
from rayfed.data.datasets import load_splits
from rayfed.fl.host import ParticipantHost
from rayfed.fl.rounds import participant_seed
from rayfed.models import ModelSpec, build_model, get_flat
from rayfed.plan import resolve
from rayfed.types import FitIns, FitRes

LR = 0.1
PER_ROUND = 5
STEPS, RESTARTS = 200, 2
PRIVACY = {
    "unprotected": PrivacyConfig(),
    "clip only": PrivacyConfig(name="central_dp", noise_placement="server",
                               noise_multiplier=1.0, clipping_norm=0.5, delta=1e-5),
    "central_dp": PrivacyConfig(name="central_dp", noise_placement="clients",
                                noise_multiplier=1.0, clipping_norm=0.5, delta=1e-5),
    "local_dp": PrivacyConfig(name="local_dp", noise_multiplier=1.0, clipping_norm=1.0,
                              delta=1e-5),
}


def workload(tmp: str, num_clients: int) -> Config:
    return Config(
        name="bench-gradient-inversion", seed=0,
        dataset=DatasetConfig(name="digits", val_fraction=0.0),
        model=ModelConfig(name="cnn"),
        partition=PartitionConfig(name="iid"),
        fl=FLConfig(num_clients=num_clients, clients_per_round=PER_ROUND,
                    min_clients=PER_ROUND, rounds=1, local_epochs=1, batch_size=1, lr=LR),
        runtime=RuntimeConfig(placement="pooled", pool_size=1),
        tracking=TrackingConfig(enabled=False, uri=f"sqlite:///{tmp}/mlflow.db"),
        checkpoint=CheckpointConfig(enabled=False, dir=f"{tmp}/ckpt"),
        output_dir=tmp,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=10, help="participants attacked")
    ap.add_argument("--figure", default=None, help="write a PNG of the reconstructions")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # as in a participant host; many tiny autograd calls
    pool, _ = load_splits("digits")
    cfg = workload(tempfile.mkdtemp(prefix="rayfed-bench-inversion-"), len(pool))
    model = build_model(ModelSpec("cnn", (1, 8, 8), 10), seed=cfg.seed)
    w0 = get_flat(model)
    ids = list(range(args.examples))
    tasks = [FitIns(pid, 1, participant_seed(cfg.seed, 1, pid)) for pid in ids]
    deltas: dict[str, list[np.ndarray]] = {}
    truth: list[tuple[np.ndarray, int]] = []
    for name, privacy in PRIVACY.items():
        host = ParticipantHost(resolve(replace(cfg, privacy=privacy)))
        res = host.fit(1, w0, tasks)
        deltas[name] = [r.delta for r in res if isinstance(r, FitRes)]
        if len(deltas[name]) != len(ids):
            raise RuntimeError(f"{name}: a participant failed: {res}")
        if not truth:
            truth = [(host.participant(p).data.x_train[0].numpy(),
                      int(host.participant(p).data.y_train[0])) for p in ids]
    # Aggregates of 5 consecutive participants (what the decryptor opens).
    groups = [ids[i:i + PER_ROUND] for i in range(0, len(ids) - PER_ROUND + 1, PER_ROUND)]
    mean_image = pool.x.mean(axis=0)

    def attack(delta: np.ndarray) -> Any:
        return invert_gradient(model, gradient_from_update(delta, lr=LR), input_shape=(1, 8, 8),
                               num_classes=10, method="ig", steps=STEPS, restarts=RESTARTS,
                               seed=0)

    rows: dict[str, list[float]] = {}
    labels: dict[str, float] = {}
    images: dict[str, list[np.ndarray]] = {}
    seconds: list[float] = []
    for name in PRIVACY:
        rows[name], images[name], right = [], [], 0
        for (x, y), delta in zip(truth, deltas[name], strict=True):
            t0 = time.perf_counter()
            rec = attack(delta)
            seconds.append(time.perf_counter() - t0)
            rows[name].append(psnr(x, rec.image))
            images[name].append(rec.image)
            right += rec.label == y
        labels[name] = right / len(truth)
    rows["aggregate of 5"], images["aggregate of 5"] = [], []
    for g in groups:
        rec = attack(np.mean([deltas["unprotected"][i] for i in g], axis=0))
        rows["aggregate of 5"].append(max(psnr(truth[i][0], rec.image) for i in g))
        # One reconstruction stands for all five members' examples.
        images["aggregate of 5"] += [rec.image] * len(g)
    baseline = [psnr(x, mean_image) for x, _ in truth]
    result = {
        "examples": len(ids), "aggregates": len(groups),
        "attack": f"ig, {STEPS} steps, best of {RESTARTS} restarts",
        "baseline_psnr": baseline,
        "psnr": rows, "label_accuracy": labels,
        "attack_seconds_median": statistics.median(seconds),
    }
    if args.figure:
        figure(args.figure, [x for x, _ in truth], images, mean_image)
    print(report(result))
    return result


def _summary(v: list[float]) -> str:
    return f"{statistics.median(v):.1f} [{min(v):.1f}, {max(v):.1f}]"


def report(result: dict[str, Any]) -> str:
    """Markdown table: median [min, max] PSNR per scenario."""
    base = result["baseline_psnr"]
    lines = ["| scenario | PSNR dB, median [min, max] | mean-image baseline dB | "
             "≥ 20 dB | label right |", "|---|---|---|---|---|"]
    for name, v in result["psnr"].items():
        lab = result["label_accuracy"].get(name)
        lines.append(f"| {name} | {_summary(v)} | {_summary(base)} | "
                     f"{sum(s >= 20 for s in v)}/{len(v)} | "
                     f"{'—' if lab is None else f'{lab:.0%}'} |")
    lines.append(f"\n{result['examples']} participants ({result['aggregates']} aggregates), "
                 f"attack: {result['attack']}; median {result['attack_seconds_median']:.1f} s "
                 "per attack.")
    return "\n".join(lines)


def figure(path: str, originals: list[np.ndarray], images: dict[str, list[np.ndarray]],
           mean_image: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["original", *images, "mean image"]
    n = len(originals)
    fig, axes = plt.subplots(n, len(cols), figsize=(1.3 * len(cols), 1.3 * n))
    for r in range(n):
        row = [originals[r], *(images[k][r] if r < len(images[k]) else None for k in images),
               mean_image]
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is not None:
                ax.imshow(img[0], cmap="gray_r", vmin=0, vmax=1)
                if c > 0:
                    ax.set_xlabel(f"{psnr(originals[r], img):.1f} dB", fontsize=7, labelpad=1)
            else:
                ax.axis("off")
            if r == 0:
                ax.set_title(cols[c], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
