"""Tasks: what each costs (FLOPs, bytes) and the stream they arrive in.

Complexity is counted, not guessed: ``torch.utils.flop_counter.FlopCounterMode``
runs the task once on the model and counts the FLOPs of every matmul and
convolution (forward, plus backward for a training step). Bytes are the real
sizes of what travels: the input batch in, the logits or the update out.

The stream is a Poisson process (exponential inter-arrival times) whose tasks
draw a kind by weight and an origin edge device uniformly; each task carries an
absolute deadline. Everything is drawn from a generator passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from rayfed.offload.config import WorkloadConfig
from rayfed.offload.zoo import ZooModel, batch, instantiate, load_data, run_task


@dataclass(frozen=True)
class TaskKind:
    name: str
    model: str
    op: str
    batch_size: int
    flops: int
    input_bytes: int
    output_bytes: int
    model_bytes: int
    deadline_s: float
    # FLOPs over the heaviest kind's: the [0, 1] "complexity" of the threshold rule.
    complexity: float
    # Test accuracy of each variant the kind may run ("fp32", maybe "int8").
    accuracy: Mapping[str, float]


@dataclass(frozen=True)
class Task:
    task_id: int
    kind: TaskKind
    origin: str
    arrival_s: float
    deadline_s: float
    # Where its batch starts in the model's data set.
    batch_start: int


def count_flops(model: torch.nn.Module, op: str, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one run of the task (``FlopCounterMode`` counts a multiply-add as 2)."""
    with FlopCounterMode(display=False) as counter:
        run_task(model, op, x, y)
    return int(counter.get_total_flops())


def describe_kinds(workload: WorkloadConfig, zoo: Mapping[str, ZooModel]) -> dict[str, TaskKind]:
    """Count each task kind's FLOPs and bytes on its model."""
    raw: dict[str, tuple] = {}
    data = {}
    for name, t in workload.tasks.items():
        zm = zoo[t.model]
        if zm.dataset not in data:
            data[zm.dataset] = load_data(zm.dataset)[0]
        xb, yb = batch(data[zm.dataset], start=0, size=t.batch_size)
        x, y = torch.from_numpy(xb), torch.from_numpy(yb)
        fp32 = instantiate(zm)["fp32"]
        flops = count_flops(fp32, t.op, x, y)
        out = run_task(fp32, t.op, x, y)
        in_bytes = x.nbytes + (y.nbytes if t.op == "train" else 0)
        model_bytes = sum(v.nbytes for v in zm.state.values())
        # Only inference can run quantized; a training step needs float weights.
        acc = dict(zm.accuracy) if t.op == "infer" else {"fp32": zm.accuracy["fp32"]}
        raw[name] = (t, flops, in_bytes, out.nbytes, model_bytes, acc)
    max_flops = max(r[1] for r in raw.values()) or 1
    return {name: TaskKind(name=name, model=t.model, op=t.op, batch_size=t.batch_size,
                           flops=flops, input_bytes=ib, output_bytes=ob, model_bytes=mb,
                           deadline_s=t.deadline_ms / 1e3, complexity=flops / max_flops,
                           accuracy=acc)
            for name, (t, flops, ib, ob, mb, acc) in raw.items()}


def make_stream(kinds: Sequence[TaskKind], weights: Sequence[float], origins: Sequence[str],
                *, num_tasks: int, arrival_rate: float,
                rng: np.random.Generator) -> list[Task]:
    """``num_tasks`` Poisson arrivals at ``arrival_rate`` per second, first at t=0."""
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    gaps = rng.exponential(1.0 / arrival_rate, size=num_tasks)
    gaps[0] = 0.0
    arrivals = np.cumsum(gaps)
    which = rng.choice(len(kinds), size=num_tasks, p=p)
    where = rng.integers(0, len(origins), size=num_tasks)
    starts = rng.integers(0, 1 << 30, size=num_tasks)
    tasks = []
    for i in range(num_tasks):
        k = kinds[int(which[i])]
        tasks.append(Task(task_id=i, kind=k, origin=origins[int(where[i])],
                          arrival_s=float(arrivals[i]),
                          deadline_s=float(arrivals[i]) + k.deadline_s,
                          batch_start=int(starts[i])))
    return tasks
