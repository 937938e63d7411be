"""PNG plots of a run's rounds, saved as MLflow artifacts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rayfed.types import RoundResult


def plot_rounds(history: Sequence[RoundResult], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    evals = [r for r in history if r.test_accuracy is not None]
    trained = [r for r in history if r.train_loss is not None]
    aborted = [r.server_round for r in history if r.status == "aborted"]
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(
        [r.server_round for r in evals],
        [float(r.test_accuracy or 0.0) for r in evals],
        marker="o",
        markersize=3,
        color="#1f77b4",
        label="global test accuracy",
    )
    for i, rnd in enumerate(aborted):
        ax.axvline(rnd, color="#d62728", alpha=0.3, lw=1, label="aborted round" if i == 0 else None)
    ax.set(xlabel="round", ylabel="accuracy", title="Test accuracy per round", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    paths.append(out_dir / "accuracy.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(
        [r.server_round for r in trained],
        [float(r.train_loss or 0.0) for r in trained],
        marker=".",
        color="#ff7f0e",
        label="participants' train loss",
    )
    ax.plot(
        [r.server_round for r in evals],
        [float(r.test_loss or 0.0) for r in evals],
        marker=".",
        color="#2ca02c",
        label="global test loss",
    )
    ax.set(xlabel="round", ylabel="cross-entropy", title="Loss per round")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    paths.append(out_dir / "loss.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
