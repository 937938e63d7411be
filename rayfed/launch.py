"""What a job does around the library: preflight checks, progress, artifacts.

``jobs/*.py`` are one-line Hydra shells; this module turns a composed config into
a typed :class:`~rayfed.config.Config`, refuses bad ones before Ray starts, runs
the experiment with a live progress display, and leaves ``summary.json``, plots,
the resolved config and the final model in the Hydra run directory and MLflow.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from rayfed.config import Config, open_dict_overrides, validate
from rayfed.errors import ConfigError
from rayfed.plan import RunPlan, resolve

log = logging.getLogger(__name__)

GROUPS = ("dataset", "model", "partition", "strategy", "privacy", "compression", "secure_agg",
          "adversary", "experiment")
_MAX_COMPOSE_TRIES = 20


def _group_options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def preflight(overrides: Sequence[str], *, config_dir: Path,
              config_name: str = "config", validate_all: bool = True) -> list[str]:
    """Every problem with a command line, found without starting anything.

    Hydra stops at the first bad override; this checks group choices itself,
    drops each override Hydra rejects and composes again, then runs
    :func:`rayfed.config.validate` on the result, so that one run reports all.
    Sweep overrides (``a=1,2``) are left to each multirun job's own check.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rayfed.config import register_configs, to_config

    register_configs()
    overrides = open_dict_overrides(overrides)
    problems: list[str] = []
    keep: list[str] = []
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # Hydra's grammar errors already name the override
        return [str(exc).splitlines()[0]]
    for o in parsed:
        if o.is_sweep_override():
            continue
        key = o.key_or_group.split("@")[0].lstrip("+~/")
        if key in GROUPS and isinstance(o.value(), str):
            options = _group_options(config_dir, key)
            if o.value() not in options:
                problems.append(f"{key}={o.value()!r} is not one of {options}; pick one of "
                                f"those (files in conf/{key}/)")
                continue
        if not key.startswith("hydra") and o.input_line is not None:
            keep.append(o.input_line)

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for _ in range(_MAX_COMPOSE_TRIES):
            try:
                cfg = to_config(compose(config_name=config_name, overrides=keep))
                break
            except Exception as exc:
                cause = f" ({exc.__cause__})" if exc.__cause__ else ""
                message = " ".join(f"{exc}{cause}".split())
                bad = next((k for k in keep if k in message), "")
                if not bad:
                    problems.append(message)
                    return problems
                problems.append(f"{bad}: {message}")
                keep.remove(bad)
        else:
            return problems
    # ``validate_all=False`` (the job's own guard): with no problem so far the run
    # itself validates, once, in rayfed.plan.resolve; otherwise validate here so
    # that one message lists everything.
    if validate_all or problems:
        problems.extend(validate(cfg))
    return problems


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _result_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="rayfed result", show_header=False)
    acc = summary.get("final_accuracy")
    rows = [
        ("status", summary.get("status")),
        ("final test accuracy", f"{acc:.4f}" if acc is not None else "n/a"),
        ("rounds completed", f"{summary.get('rounds_completed')}"
                             f" (aborted {summary.get('rounds_aborted', 0)})"),
        ("wall seconds", f"{summary.get('wall_seconds', 0):.1f}"),
        ("mean round seconds", f"{summary.get('mean_round_seconds') or 0:.3f}"),
        ("bytes uploaded", f"{summary.get('bytes_uploaded', 0):,}"),
        ("MLflow run", str(summary.get("mlflow_run_id"))),
        ("summary", str(summary.get("summary_path"))),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    return table


def run_federated(cfg: Config | RunPlan, *, resolved_yaml: str | None = None,
                  show_progress: bool = True, run_name: str | None = None,
                  parent_run_id: str | None = None) -> dict[str, Any]:
    """Run one federated experiment end to end and return its summary.

    The config is resolved into its plan here, once (validation included).
    ``parent_run_id``: the MLflow run of the sweep this run is a trial of."""
    return run_federated_model(cfg, resolved_yaml=resolved_yaml, show_progress=show_progress,
                               run_name=run_name, parent_run_id=parent_run_id)[0]


def run_federated_model(cfg: Config | RunPlan, *, resolved_yaml: str | None = None,
                        show_progress: bool = True, run_name: str | None = None,
                        parent_run_id: str | None = None) -> tuple[dict[str, Any], Any]:
    """:func:`run_federated`, also returning the final global model (an ``nn.Module``);
    the body of both ``jobs/federated.py`` and :func:`rayfed.run`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rayfed.compression.final import export_final_model
    from rayfed.fl.orchestrator import Orchestrator
    from rayfed.tracking import NullTracker, RunStatus, Tracker
    from rayfed.tracking.mlflow import MlflowTracker
    from rayfed.tracking.plots import plot_rounds

    plan = cfg if isinstance(cfg, RunPlan) else resolve(cfg)
    cfg = plan.config
    console = Console()
    out_dir = Path(cfg.output_dir)
    summary_path = out_dir / "summary.json"
    tracker: Tracker = (MlflowTracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment,
                                      run_name=run_name or cfg.name, parent_run_id=parent_run_id)
                        if cfg.tracking.enabled else NullTracker())
    orch: Orchestrator | None = None
    summary: dict[str, Any] = {"status": "FAILED"}
    try:
        orch = Orchestrator(plan, tracker=tracker)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                      disable=not show_progress, transient=False) as progress:
            task = progress.add_task("federated rounds", total=cfg.fl.rounds,
                                     completed=orch.next_round - 1, info="")
            for r in orch.rounds():
                if r.status == "aborted":
                    console.print(f"[yellow]{r.reason}")
                acc = f"acc={r.test_accuracy:.3f} " if r.test_accuracy is not None else ""
                progress.update(task, advance=1,
                                info=f"{acc}reported={r.num_reported}/{r.num_selected} "
                                     f"{r.seconds:.2f}s")
        summary = orch.summary(status="FINISHED")
        orch.evaluate()  # leaves the final global weights in orch.model
        # Without a server test set (users' data, federated evaluation) there is
        # nothing to measure or calibrate the final model on.
        final = (export_final_model(orch.model, orch._x_test, orch._y_test,
                                    cfg=cfg.compression, data_seed=cfg.dataset.seed,
                                    out_dir=out_dir)
                 if orch._x_test is not None and orch._y_test is not None else None)
        if final is not None:
            summary.update(final.summary)
        if final is not None and final.report is not None and final.path is not None:
            tracker.log_metrics(final.report.metrics(), step=cfg.fl.rounds)
            for path in final.paths:
                tracker.log_artifact(path, artifact_path="model_int8")
        summary["summary_path"] = str(summary_path)
        _write_json(summary_path, summary)
        if orch.privacy.active:
            ledger_path = out_dir / "privacy_ledger.json"
            _write_json(ledger_path, {**orch.privacy.summary(),
                                      "events": orch.privacy.ledger_rows()})
            tracker.log_artifact(ledger_path)
            if orch.privacy.budget_exhausted:
                console.print(f"[yellow]{orch.privacy.reason}; the model and a checkpoint "
                              "were saved")
        (out_dir / "config.yaml").write_text(resolved_yaml or json.dumps(asdict(cfg), indent=2))
        for plot in plot_rounds(orch.history, out_dir / "plots"):
            tracker.log_artifact(plot, artifact_path="plots")
        tracker.log_artifact(out_dir / "config.yaml")
        tracker.log_artifact(summary_path)
        if cfg.tracking.log_model:
            orch.evaluate()  # leaves the final global weights in orch.model
            tracker.log_model(orch.model, input_example=(
                orch._x_test[:4].numpy() if orch._x_test is not None
                else np.zeros((4, *orch.input_shape), np.float32)))
        tracker.finish("FINISHED")
        console.print(_result_table(summary))
        orch.evaluate()
        return summary, orch.model
    except BaseException as exc:
        status: RunStatus = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        summary = orch.summary(status=status) if orch else {"status": status}
        summary["error"] = f"{type(exc).__name__}: {exc}"
        summary["traceback"] = traceback.format_exc(limit=5)
        _write_json(summary_path, summary)
        if tracker.run_id:
            tracker.log_artifact(summary_path)
        tracker.finish(status)
        raise
    finally:
        if orch is not None:
            orch.close()


def sweep_trial(cfg: Config, *, sweep_id: str,
                overrides: Sequence[str]) -> tuple[str, str | None]:
    """A multirun trial's MLflow run name and its sweep's parent run (made by
    :class:`~rayfed.tracking.sweep.MlflowSweepCallback` before the trials)."""
    import mlflow

    from rayfed.tracking.mlflow import default_tracking_uri
    from rayfed.tracking.sweep import find_parent, trial_name

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking.uri or default_tracking_uri())
    parent = find_parent(client, cfg.tracking.experiment, sweep_id)
    return trial_name(client, parent, overrides) or cfg.name, parent


def run_from_hydra(dict_cfg: Any) -> float | None:
    """Body of ``jobs/federated.py``: convert, check, run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from rayfed.config import to_config

    hc = HydraConfig.get()
    cfg = replace(to_config(dict_cfg), output_dir=hc.runtime.output_dir)
    run_name, parent = None, None
    if hc.mode == RunMode.MULTIRUN and cfg.tracking.enabled:
        run_name, parent = sweep_trial(cfg, sweep_id=str(hc.sweep.dir),
                                       overrides=hc.overrides.task)
    try:
        plan = resolve(cfg)
    except ConfigError as exc:
        _exit_invalid(exc.problems)
    summary = run_federated(plan, resolved_yaml=OmegaConf.to_yaml(dict_cfg, resolve=True),
                            run_name=run_name, parent_run_id=parent)
    acc = summary.get("final_accuracy")
    return float(acc) if acc is not None else None


def main_guard(argv: Sequence[str], *, config_dir: Path) -> None:
    """Exit with status 2 and every problem listed if the command line is bad."""

    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    if multirun or any(re.match(r"^--(help|info|cfg|hydra-help)", a) for a in argv):
        return
    problems = preflight(overrides, config_dir=config_dir, validate_all=False)
    if problems:
        _exit_invalid(problems)


def _exit_invalid(problems: Sequence[str]) -> NoReturn:
    """Exit with status 2, every problem listed, before anything started."""
    import sys

    print(f"rayfed: invalid configuration ({len(problems)} problem(s)); nothing was "
          "started:", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(2)
