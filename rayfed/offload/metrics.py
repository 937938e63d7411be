"""What a stream's run measured: latency percentiles, deadlines, makespan, utilisation,
offloading, and the makespan lower bound of the workload; plus latency CDF plots.

Pure functions over :class:`~rayfed.offload.scheduler.TaskRecord` values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rayfed.offload.bounds import makespan_lower_bound
from rayfed.offload.cost import RateTable, rate_key, variants_for
from rayfed.offload.profiles import DeviceProfile, transfer_s
from rayfed.offload.records import StreamResult, TaskRecord
from rayfed.offload.tasks import Task


def summarize(result: StreamResult, profiles: Sequence[DeviceProfile]) -> dict[str, Any]:
    recs = result.records
    lat = np.array([r.latency_s for r in recs]) * 1e3
    start = min(r.arrival_s for r in recs)
    makespan = max(r.finish_s for r in recs) - start
    busy: dict[str, float] = defaultdict(float)
    for r in recs:
        busy[r.device] += r.compute_s
    dec = np.array(result.decision_s) * 1e6
    cloud = {p.name for p in profiles if p.kind == "cloud"}
    pred_err = np.array([abs(r.predicted_finish_s - r.finish_s) for r in recs]) * 1e3
    return {
        "num_tasks": len(recs),
        "p50_latency_ms": float(np.percentile(lat, 50)),
        "p95_latency_ms": float(np.percentile(lat, 95)),
        "p99_latency_ms": float(np.percentile(lat, 99)),
        "mean_latency_ms": float(lat.mean()),
        "deadline_miss_rate": float(np.mean([r.finish_s > r.deadline_s for r in recs])),
        "makespan_s": float(makespan),
        "offload_fraction": float(np.mean([r.device != r.origin for r in recs])),
        "cloud_fraction": float(np.mean([r.device in cloud for r in recs])),
        "int8_fraction": float(np.mean([r.variant == "int8" for r in recs])),
        "mean_accuracy": float(np.mean([r.accuracy for r in recs])),
        "bytes_moved": int(sum(r.bytes_moved for r in recs)),
        "edge_energy_j": float(sum(r.energy_j for r in recs)),
        "reassignments": result.reassignments,
        "dead_devices": list(result.dead_devices),
        "utilisation": {p.name: busy[p.name] / makespan for p in profiles},
        "decision_us_p50": float(np.median(dec)) if dec.size else 0.0,
        "decision_us_p99": float(np.percentile(dec, 99)) if dec.size else 0.0,
        "finish_prediction_error_ms_p50": float(np.median(pred_err)),
        "max_intake": result.max_intake,
        "peak_queue_tasks": dict(result.peak_queue),
        # Live load per device once the stream is over: (seconds, tasks), all zero.
        "outstanding_after_stream": {n: list(v) for n, v in result.outstanding.items()},
    }


def processing_times(tasks: Sequence[Task], profiles: Sequence[DeviceProfile],
                     records: Sequence[TaskRecord], calibrated: RateTable, *,
                     max_accuracy_drop: float) -> tuple[list[str], np.ndarray]:
    """``proc_s[k, d]``: the fastest allowed variant's median measured compute time of
    kind ``k`` on device ``d`` (calibration where the runs never measured it)."""
    seen: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records:
        seen[(r.device, r.kind, r.variant)].append(r.compute_s)
    kinds = {t.kind.name: t.kind for t in tasks}
    names = sorted(kinds)
    proc = np.full((len(names), len(profiles)), np.inf)
    for i, name in enumerate(names):
        probe = next(t for t in tasks if t.kind.name == name)
        for d, p in enumerate(profiles):
            for v in variants_for(probe, p, max_accuracy_drop=max_accuracy_drop):
                obs = seen.get((p.name, name, v))
                s = (float(np.median(obs)) if obs else
                     kinds[name].flops / calibrated.rates[(p.name, rate_key(name, v))])
                proc[i, d] = min(proc[i, d], s)
    return names, proc


def lower_bound(tasks: Sequence[Task], profiles: Sequence[DeviceProfile],
                names: list[str], proc_s: np.ndarray) -> float:
    by_name = {p.name: p for p in profiles}
    kind = np.array([names.index(t.kind.name) for t in tasks])
    arrival = np.array([t.arrival_s for t in tasks])
    min_lat = np.array([
        min(transfer_s(t.kind.input_bytes, by_name[t.origin], p) + proc_s[kind[j], d]
            + transfer_s(t.kind.output_bytes, p, by_name[t.origin])
            for d, p in enumerate(profiles))
        for j, t in enumerate(tasks)])
    return makespan_lower_bound(arrival, kind, proc_s, min_lat)


def plot_latency_cdfs(results: Mapping[str, StreamResult], out_dir: Path) -> list[Path]:
    """One CDF PNG per policy, and one with every policy overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    curves = {name: np.sort([r.latency_s * 1e3 for r in res.records])
              for name, res in results.items()}
    groups = [(f"latency_cdf_{n}.png", {n: c}) for n, c in curves.items()]
    if len(curves) > 1:
        groups.append(("latency_cdf_all.png", curves))
    for filename, group in groups:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for name, lat in group.items():
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=name)
        ax.set(xscale="log", xlabel="latency (ms)", ylabel="fraction of tasks",
               title="Task latency CDF", ylim=(0, 1.01))
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower right")
        fig.tight_layout()
        paths.append(out_dir / filename)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
