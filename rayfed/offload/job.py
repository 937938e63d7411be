"""What ``jobs/offload.py`` runs: every chosen policy on one stream, with a live
progress display, ``summary.json``, MLflow metrics and a latency CDF PNG per policy.

``summary.json`` holds, per policy, ``p50_latency_ms``, ``p95_latency_ms``,
``deadline_miss_rate``, ``makespan_s`` (and more), and the workload's
``lower_bound_makespan_s``; with ``greedy_eft``, ``threshold`` and ``all_cloud``
in the run, an ``acceptance`` block compares them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayfed.offload.config import OffloadJobConfig, selected_policies
from rayfed.offload.report import acceptance, console_table, markdown_table

if TYPE_CHECKING:
    from rayfed.tracking import Tracker


def write_policy(name: str, summary: dict[str, Any], *, out_dir: Path, tracker: Tracker,
                 step: int) -> Path:
    """Keep one finished policy's results (file and MLflow) before the next one starts,
    so that an interrupted run loses only the policy it was in."""
    path = out_dir / "policies" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"policy": name, **summary}, indent=2) + "\n")
    tracker.log_metrics({f"{name}.{k}": v for k, v in summary.items()
                         if isinstance(v, int | float)}, step=step)
    tracker.log_artifact(path, artifact_path="policies")
    return path


def _progress(console: Any, *, show: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description:>14}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=console, disable=not show)


def run_offload(job: OffloadJobConfig, *, resolved_yaml: str | None = None,
                show_progress: bool = True,
                on_policy: Callable[[str, dict[str, Any]], None] | None = None
                ) -> dict[str, Any]:
    """Every selected policy on one stream; returns ``summary.json``'s content.

    ``policies/<name>.json`` and the policy's MLflow metrics are written as soon
    as it finishes (then ``on_policy(name, its summary)`` is called), so a run
    interrupted later keeps them; its ``summary.json`` (status KILLED) lists them too.
    """
    from rich.console import Console

    from rayfed.job import record_failure
    from rayfed.offload.metrics import lower_bound, plot_latency_cdfs, processing_times, summarize
    from rayfed.offload.runner import OffloadRun

    cfg = job.offload
    console = Console()
    out_dir = Path(job.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    from rayfed.tracking.config import make_tracker

    tracker = make_tracker(job.tracking, run_name=job.name)
    policies = selected_policies(cfg)
    per_policy: dict[str, dict[str, Any]] = {}
    try:
        tracker.start(params=asdict(cfg), tags={"job": "offload"})
        num_devices = sum(d.count for d in cfg.fleet.devices.values())
        setup = (console.status(f"setting up: model zoo, {num_devices} device "
                                "actors, calibration") if show_progress else nullcontext())
        with setup:
            run = OffloadRun(cfg)
        with run:
            tasks = run.stream()
            results = {}
            with _progress(console, show=show_progress) as progress:
                overall = (progress.add_task("all policies", total=len(policies) * len(tasks))
                           if len(policies) > 1 else None)
                for step, name in enumerate(policies):
                    bar = progress.add_task(name, total=len(tasks))
                    # The emulation scales measured CPU time, so a busy host shows up
                    # in the numbers; record its load next to them.
                    load_before = os.getloadavg()[0]

                    def advance(done: int, bar: Any = bar, base: int = step * len(tasks)
                                ) -> None:
                        progress.update(bar, completed=done)
                        if overall is not None:
                            progress.update(overall, completed=base + done)

                    results[name] = run.run_policy(name, tasks, on_progress=advance)
                    advance(len(tasks))
                    s = summarize(results[name], run.profiles)
                    s["host_load_1min_before_after"] = [load_before, os.getloadavg()[0]]
                    write_policy(name, s, out_dir=out_dir, tracker=tracker, step=step)
                    per_policy[name] = s
                    if on_policy is not None:
                        on_policy(name, s)
            records = [r for res in results.values() for r in res.records]
            names, proc = processing_times(tasks, run.profiles, records, run.rates,
                                           max_accuracy_drop=cfg.max_accuracy_drop)
            lb = lower_bound(tasks, run.profiles, names, proc)
            profiles, kinds = run.profiles, run.kinds
        for s in per_policy.values():
            s["makespan_over_lower_bound"] = s["makespan_s"] / lb
        summary: dict[str, Any] = {
            "status": "FINISHED", "num_tasks": cfg.num_tasks, "arrival_rate": cfg.arrival_rate,
            "lower_bound_makespan_s": lb, "policies": per_policy,
            "acceptance": acceptance(per_policy, lb),
            "kinds": {n: {"flops": k.flops, "input_bytes": k.input_bytes,
                          "output_bytes": k.output_bytes, "complexity": k.complexity,
                          "accuracy": dict(k.accuracy)} for n, k in kinds.items()},
            "fastest_compute_ms": {n: {p.name: float(proc[i, d] * 1e3)
                                       for d, p in enumerate(profiles)}
                                   for i, n in enumerate(names)},
            "mlflow_run_id": tracker.run_id, "summary_path": str(summary_path),
        }
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        (out_dir / "policy_table.md").write_text(markdown_table(summary))
        (out_dir / "config.yaml").write_text(resolved_yaml or json.dumps(asdict(job), indent=2))
        tracker.log_metrics({f"{n}.makespan_over_lower_bound": s["makespan_over_lower_bound"]
                             for n, s in per_policy.items()}, step=len(policies))
        tracker.log_metrics({"lower_bound_makespan_s": lb}, step=0)
        for plot in plot_latency_cdfs(results, out_dir / "plots"):
            tracker.log_artifact(plot, artifact_path="plots")
        tracker.log_artifact(summary_path)
        tracker.log_artifact(out_dir / "config.yaml")
        tracker.finish("FINISHED")
        console.print(console_table(summary))
        return summary
    except BaseException as exc:
        record_failure(exc, summary_path, tracker=tracker,
                       details={"num_tasks": cfg.num_tasks, "arrival_rate": cfg.arrival_rate,
                                "policies_finished": list(per_policy),
                                "policies": per_policy})
        raise


def run_from_hydra(dict_cfg: Any) -> float | None:
    """Body of ``jobs/offload.py``: :func:`rayfed.job.run_job` over :func:`run_offload`;
    returns greedy_eft's p95 latency when it ran."""
    from omegaconf import OmegaConf

    from rayfed.job import run_job
    from rayfed.offload.config import to_offload_config, validate
    from rayfed.runtime import RaySettings

    def run(job: OffloadJobConfig) -> float | None:
        summary = run_offload(job, resolved_yaml=OmegaConf.to_yaml(dict_cfg, resolve=True))
        g = summary["policies"].get("greedy_eft")
        return float(g["p95_latency_ms"]) if g else None

    return run_job(dict_cfg, convert=to_offload_config, check=lambda job: validate(job.offload),
                   run=run, ray=lambda job: RaySettings(address=job.ray_address,
                                                        num_cpus=job.num_cpus,
                                                        key="ray_address"))
