"""A per-rank audit of a DDP run: which examples each rank drew, how much DP noise
it added per step, and a digest of its parameters after its first step.

It makes the invariants of data-parallel training checkable from outside the
run: ranks draw disjoint examples, hold identical parameters after every step,
and under DP-SGD only one rank adds noise. Each rank writes one JSON file per
attempt (a restart after a failure is a new attempt), rewritten every epoch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset


class IndexRecorder(Dataset):
    """A dataset that remembers every index it was asked for (loader workers = 0)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        self.seen.append(int(index))
        return self.base[index]


@torch.no_grad()
def param_digest(model: nn.Module) -> str:
    """SHA-256 of the parameters' bytes in order: equal iff bitwise identical."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class RankTrace:
    rank: int
    world_size: int
    start_epoch: int
    restored: bool
    device: str
    tf32: dict[str, bool] | None = None
    initial_digest: str | None = None
    first_step_digest: str | None = None
    # epoch -> {"indices": [...], "noise_norms": [...], "digest": parameters at its end}
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)
    _noise: list[float] = field(default_factory=list, repr=False)

    def first_step(self, model: nn.Module) -> None:
        if self.first_step_digest is None:
            self.first_step_digest = param_digest(model)

    def noise(self, norm: float) -> None:
        self._noise.append(norm)

    def begin_epoch(self, dataset: Any) -> None:
        self._noise = []
        if isinstance(dataset, IndexRecorder):
            dataset.seen.clear()

    def end_epoch(self, epoch: int, dataset: Any, model: nn.Module,
                  trace_dir: str | None) -> None:
        if trace_dir is None:
            return
        indices = dataset.seen.copy() if isinstance(dataset, IndexRecorder) else []
        self.epochs[epoch] = {"indices": indices, "noise_norms": self._noise.copy(),
                              "digest": param_digest(model)}
        path = Path(trace_dir) / f"rank{self.rank}-attempt{self.start_epoch}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        path.write_text(json.dumps(data))


def read_traces(trace_dir: str | Path) -> list[dict[str, Any]]:
    """Every rank's trace of every attempt, ordered by (attempt, rank)."""
    out = [json.loads(p.read_text()) for p in Path(trace_dir).glob("rank*-attempt*.json")]
    for t in out:
        t["epochs"] = {int(k): v for k, v in t["epochs"].items()}
    return sorted(out, key=lambda t: (t["start_epoch"], t["rank"]))
