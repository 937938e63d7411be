"""What ``jobs/train_ddp.py`` runs: one Ray Train DDP run, its MLflow run and
``summary.json`` (``final_accuracy``, ``samples_per_second``, ``precision``,
``num_workers`` and more) in the Hydra run directory.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rayfed.train.config import TrainJobConfig


def steady_samples_per_second(per_epoch: list[float]) -> float | None:
    """Mean over epochs after the first (which pays for warm-up), or the only one."""
    if not per_epoch:
        return None
    rest = per_epoch[1:] or per_epoch
    return sum(rest) / len(rest)


def build_plan(job: TrainJobConfig, *, mlflow_target: Any = None) -> Any:
    """The :class:`~rayfed.train.ddp.WorkerPlan` of ``job`` (loads the data once
    here to size the model and the DP sample rate; workers load it themselves)."""
    from rayfed.models import build_model, spec_from_config
    from rayfed.train.ddp import Optimization, WorkerPlan
    from rayfed.train.private import plan_dp
    from rayfed.train.workload import DataSource

    t = job.train
    source = DataSource(job.dataset, synthetic_if_missing=t.synthetic_if_missing,
                        synthetic_examples=t.synthetic_examples, seed=job.seed)
    work = source.load()
    spec = spec_from_config(job.model, input_shape=work.input_shape,
                            num_classes=work.num_classes)
    dp = None
    if job.privacy.name == "local_dp":
        dp = plan_dp(job.privacy, num_examples=len(work.y_train), num_workers=t.num_workers,
                     batch_size=t.batch_size, epochs=t.epochs)
    opt = Optimization(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, optimizer=t.optimizer,
                       momentum=t.momentum, weight_decay=t.weight_decay)
    plan = WorkerPlan(model=build_model(spec, seed=job.seed), data=source, opt=opt,
                      precision=t.precision, tf32=t.tf32, seed=job.seed,
                      torch_threads=t.torch_threads, loader_workers=t.loader_workers, dp=dp,
                      mlflow=mlflow_target, trace_dir=t.trace_dir,
                      crash_rank=t.faults.crash_rank, crash_epoch=t.faults.crash_epoch)
    return plan, work.source, work.synthetic


def in_background(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    """``fn`` on a daemon thread (Ctrl-C in the main thread then ends the job without
    waiting for it, which a thread pool's exit would)."""
    future: Future[Any] = Future()

    def target() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name="ray-train-fit", daemon=True).start()
    return future


def epoch_line(report: dict[str, Any]) -> str:
    """Rank 0's epoch report as the progress display's text."""
    parts = [f"loss={report['loss']:.4f}"]
    if report.get("accuracy") is not None:
        parts.append(f"acc={report['accuracy']:.3f}")
    if report.get("epsilon") is not None:
        parts.append(f"ε={report['epsilon']:.2f}")
    parts.append(f"{report['samples_per_second']:,.0f} samples/s")
    return " ".join(parts)


def follow_epochs(running: Future[Any], queue: Any, *, epochs: int, show: bool) -> None:
    """Until ``running`` ends: one progress bar over epochs (rank 0's reports) on the
    console, and every rank's report as a line in the job's log file only."""
    from queue import Empty

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    reports = file_only_logger("rayfed.train.reports")
    with Progress(TextColumn("[bold]DDP epochs"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  disable=not show) as progress:
        bar = progress.add_task("epochs", total=epochs, info="")
        while True:
            done = running.done()
            try:
                # Whatever is queued once the run has ended is drained without waiting.
                report = queue.get(block=not done, timeout=None if done else 0.5)
            except Empty:
                if done:
                    return
                continue
            reports.info("epoch %s rank %s: %s", report.get("epoch"), report.get("rank"),
                         {k: v for k, v in report.items() if k not in ("epoch", "rank")})
            if report.get("rank") == 0:
                progress.update(bar, completed=report["epoch"] + 1, info=epoch_line(report))


def file_only_logger(name: str) -> logging.Logger:
    """A logger that writes to the job's log file (Hydra's ``<job>.log``) and not to
    the console; without a log file (not under Hydra) it writes nowhere."""
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [h for h in logging.getLogger().handlers
                       if isinstance(h, logging.FileHandler)]
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def run_training(job: TrainJobConfig, *, resolved_yaml: str | None = None,
                 show_progress: bool = True) -> dict[str, Any]:
    """Run the DDP job end to end and return its summary."""
    from ray.util.queue import Queue

    from rayfed.job import record_failure
    from rayfed.train.ddp import MlflowTarget, Scaling, fit

    t = job.train
    out_dir = Path(job.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    from rayfed.tracking.config import make_tracker

    tracker = make_tracker(job.tracking, run_name=job.name)
    run_name = t.run_name or f"{job.name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    storage = os.path.abspath(t.storage_path or "ray_train_runs")
    try:
        tracker.start(params=asdict(job), tags={"job": "train_ddp"})
        target = (MlflowTarget(uri=tracker.uri, experiment=job.tracking.experiment,  # type: ignore[attr-defined]
                               run_id=tracker.run_id) if tracker.run_id else None)
        plan, source, synthetic = build_plan(job, mlflow_target=target)
        queue = Queue(actor_options={"num_cpus": 0})
        plan = replace(plan, progress=queue)
        started = time.perf_counter()
        running = in_background(
            fit, plan, Scaling(t.num_workers, t.use_gpu, dict(t.resources_per_worker)),
            run_name=run_name, storage_path=storage, max_failures=t.max_failures,
            keep_checkpoints=t.keep_checkpoints)
        follow_epochs(running, queue, epochs=t.epochs, show=show_progress)
        result = running.result()
        wall = time.perf_counter() - started
        history = result.metrics_dataframe
        per_epoch = ([float(v) for v in history["samples_per_second"]]
                     if history is not None and "samples_per_second" in history else [])
        m = result.metrics or {}
        summary: dict[str, Any] = {
            "status": "FINISHED",
            "final_accuracy": None if synthetic else m.get("accuracy"),
            "samples_per_second": steady_samples_per_second(per_epoch),
            "precision": t.precision,
            "num_workers": t.num_workers,
            "use_gpu": t.use_gpu,
            "tf32": {k: m[k] for k in ("tf32_matmul", "tf32_cudnn") if k in m} or None,
            "final_loss": m.get("loss"),
            "epochs": t.epochs,
            "global_batch_size": t.batch_size * t.num_workers,
            "data": source,
            "synthetic_data": synthetic,
            "epsilon": m.get("epsilon"),
            "delta": plan.dp.delta if plan.dp else None,
            "noise_multiplier": plan.dp.noise_multiplier if plan.dp else None,
            "resumed_at_epoch": m.get("attempt_start_epoch"),
            "wall_seconds": wall,
            "ray_train_run": run_name,
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
            "mlflow_run_id": tracker.run_id,
            "summary_path": str(summary_path),
        }
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        (out_dir / "config.yaml").write_text(resolved_yaml or json.dumps(asdict(job), indent=2))
        final = {k: v for k, v in (("final_accuracy", summary["final_accuracy"]),
                                   ("samples_per_second", summary["samples_per_second"]))
                 if v is not None}
        tracker.log_metrics(final, step=t.epochs)
        tracker.log_artifact(summary_path)
        tracker.log_artifact(out_dir / "config.yaml")
        tracker.finish("FINISHED")
        _print(summary)
        return summary
    except BaseException as exc:
        record_failure(exc, summary_path, tracker=tracker, details={"ray_train_run": run_name})
        raise


def _print(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rayfed DDP training", show_header=False)
    for key in ("status", "data", "final_accuracy", "samples_per_second", "precision",
                "num_workers", "tf32", "epsilon", "ray_train_run", "summary_path"):
        value = summary.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def run_from_hydra(dict_cfg: Any) -> float | None:
    """Body of ``jobs/train_ddp.py``: :func:`rayfed.job.run_job` over :func:`run_training`."""
    from omegaconf import OmegaConf

    from rayfed.job import run_job
    from rayfed.runtime import RaySettings
    from rayfed.train.config import to_train_job_config, validate

    def run(job: TrainJobConfig) -> float | None:
        summary = run_training(job, resolved_yaml=OmegaConf.to_yaml(dict_cfg, resolve=True))
        acc = summary.get("final_accuracy")
        return float(acc) if acc is not None else None

    return run_job(dict_cfg, convert=to_train_job_config, check=validate, run=run,
                   ray=lambda job: RaySettings(address=job.ray_address, num_cpus=job.num_cpus,
                                               key="ray_address"))
