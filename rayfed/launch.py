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
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rayfed.config import Config, open_dict_overrides, validate
from rayfed.plan import RunPlan, resolve
from rayfed.timing import mark

log = logging.getLogger(__name__)

GROUPS = ("dataset", "model", "partition", "strategy", "privacy", "compression", "secure_agg",
          "adversary", "experiment")
_MAX_COMPOSE_TRIES = 20


def _group_options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def preflight(overrides: Sequence[str], *, config_dir: Path,
              config_name: str = "config", sweep: bool = False,
              validate_all: bool = True) -> list[str]:
    """Every problem with a command line, found without starting anything.

    Hydra stops at the first bad override; this checks group choices and keys
    itself (a key the schema lacks, with or without ``+``, names the closest valid
    key; a key of a feature group that is off names the groups to select), drops
    each override Hydra rejects and composes again, then runs
    :func:`rayfed.config.validate` on the result, so that one run reports all.
    Sweep values (``a=1,2``) are left to each multirun job's own check, but their
    keys are checked here; with ``sweep`` (``-m``) the composed config lacks the
    swept values, so :func:`~rayfed.config.validate` is left to each trial too.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rayfed.config import register_configs, to_config
    from rayfed.overrides import feature_off_problem, schema_of, unknown_key_problem

    register_configs()
    overrides = open_dict_overrides(overrides)
    problems: list[str] = []
    keep: list[str] = []
    # (override, key) pairs whose group must be on; checked once composed.
    feature_keys: list[tuple[str, str]] = []
    swept_groups: set[str] = set()
    schema = schema_of(Config())
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # Hydra's grammar errors already name the override
        return [str(exc).splitlines()[0]]
    for o in parsed:
        key = o.key_or_group.split("@")[0].lstrip("+~/")
        line = o.input_line or key
        if key.startswith("hydra") or "/" in key:
            continue
        unknown = unknown_key_problem(line, key, schema, GROUPS)
        if unknown:
            problems.append(unknown)
            continue
        if o.is_sweep_override():
            swept_groups.add(key)
            feature_keys.append((line, key))
            continue
        if key in GROUPS and isinstance(o.value(), str):
            options = _group_options(config_dir, key)
            if o.value() not in options:
                problems.append(f"{key}={o.value()!r} is not one of {options}; pick one of "
                                f"those (files in conf/{key}/)")
                continue
        feature_keys.append((line, key))
        if o.input_line is not None:
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
    selected = {g: getattr(cfg, g).name for g in GROUPS if hasattr(getattr(cfg, g, None), "name")}
    choices = {g: _group_options(config_dir, g) for g in selected}
    for line, key in feature_keys:
        if key.split(".")[0] in swept_groups:
            continue  # the group itself is swept: each trial's own check decides
        off = feature_off_problem(line, key, selected, choices)
        if off:
            problems.append(off)
    # ``validate_all=False`` (the job's own guard): with no problem so far the run
    # itself validates, once, in rayfed.plan.resolve; otherwise validate here so
    # that one message lists everything. A sweep's trials each validate their own.
    if not sweep and (validate_all or problems):
        problems.extend(validate(cfg))
    return problems


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _result_table(summary: dict[str, Any]) -> Any:
    from rayfed.tracking.console import result_table

    return result_table(summary)


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

    from rayfed.tracking.config import make_tracker
    from rayfed.tracking.console import quiet_library_notices, round_log
    from rayfed.tracking.mlflow import hydra_choices

    plan = cfg if isinstance(cfg, RunPlan) else resolve(cfg)
    cfg = plan.config
    console = Console()
    tracker = make_tracker(cfg.tracking, run_name=run_name or cfg.name,
                           parent_run_id=parent_run_id, choices=hydra_choices())
    with quiet_library_notices(), round_log() as rounds_log:
        summary, model = _run(plan, tracker, console, rounds_log, resolved_yaml=resolved_yaml,
                              show_progress=show_progress)
    # After the run has closed (Ray and its actors shut down), so that no warning
    # of theirs lands below the table.
    console.print(_result_table(summary))
    return summary, model


def _run(plan: RunPlan, tracker: Any, console: Any, rounds_log: logging.Logger, *,
         resolved_yaml: str | None, show_progress: bool) -> tuple[dict[str, Any], Any]:
    """The run itself: rounds with progress, then every artifact; the caller prints."""
    cfg = plan.config
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rayfed.compression.final import export_final_model
    from rayfed.fl.orchestrator import Orchestrator
    from rayfed.job import failure_status, record_failure
    from rayfed.tracking.plots import plot_rounds

    out_dir = Path(cfg.output_dir)
    summary_path = out_dir / "summary.json"
    orch: Orchestrator | None = None
    summary: dict[str, Any] = {"status": "FAILED"}
    rounds_log.info("run %s: %d rounds, output in %s", cfg.name, cfg.fl.rounds,
                    out_dir.resolve())
    try:
        orch = Orchestrator(plan, tracker=tracker)
        mark("setup")
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                      disable=not show_progress, transient=False) as progress:
            task = progress.add_task("federated rounds", total=cfg.fl.rounds,
                                     completed=orch.next_round - 1, info="")
            for r in orch.rounds():
                if r.status == "aborted":
                    console.print(f"[yellow]{r.reason}")
                acc = f"acc={r.test_accuracy:.3f} " if r.test_accuracy is not None else ""
                rounds_log.info("round %d/%d %s: %sreported=%d/%d %.2fs%s", r.server_round,
                                cfg.fl.rounds, r.status, acc, r.num_reported, r.num_selected,
                                r.seconds, f" ({r.reason})" if r.status == "aborted" else "")
                progress.update(task, advance=1,
                                info=f"{acc}reported={r.num_reported}/{r.num_selected} "
                                     f"{r.seconds:.2f}s")
        mark("rounds")
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
        mark("artifacts")
        rounds_log.info("finished: %s", json.dumps({k: summary.get(k) for k in (
            "final_accuracy", "epsilon", "delta", "rounds_completed", "wall_seconds")}))
        orch.evaluate()  # the final global weights in orch.model
        return summary, orch.model
    except BaseException as exc:
        record_failure(exc, summary_path, tracker=tracker,
                       details=orch.summary(status=failure_status(exc)) if orch else None)
        raise
    finally:
        if orch is not None:
            orch.close()
        mark("closed")


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
    """Body of ``jobs/federated.py``: :func:`rayfed.job.run_job` over
    :func:`run_federated`; returns the final accuracy (what Hydra sweeps optimise)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from rayfed.config import to_config
    from rayfed.job import run_job
    from rayfed.runtime import RaySettings

    mark("hydra")

    def run(plan: RunPlan) -> float | None:
        hc = HydraConfig.get()
        cfg = plan.config
        run_name, parent = None, None
        if hc.mode == RunMode.MULTIRUN and cfg.tracking.enabled:
            run_name, parent = sweep_trial(cfg, sweep_id=str(hc.sweep.dir),
                                           overrides=hc.overrides.task)
        summary = run_federated(plan, resolved_yaml=OmegaConf.to_yaml(dict_cfg, resolve=True),
                                run_name=run_name, parent_run_id=parent)
        acc = summary.get("final_accuracy")
        return float(acc) if acc is not None else None

    # ``resolve`` validates (once for the whole run) and plans, before Ray starts.
    return run_job(dict_cfg, convert=to_config, plan=resolve, run=run,
                   ray=lambda cfg: RaySettings.of(cfg.runtime), warm=warm_imports)


def warm_imports(plan: RunPlan) -> None:
    """What the end of a run imports, imported while Ray and the actors start.

    Measured (issue #18): ``import mlflow`` ~3 s and the first ``torch.export`` of
    MLflow's model logging ~2 s on 2 loaded cores, ~0.8 s more of that logging's
    one-time set-up, plus matplotlib for the plots;
    the driver otherwise sits waiting for Ray's processes and the actors then.
    The tiny export pays torch.export's one-time set-up; the final model's own
    export afterwards takes a tenth of a second.
    """
    cfg = plan.config
    # First what the driver needs as soon as Ray is up: torch (~0.8 s), imported
    # here while ray.init waits for Ray's processes; the config layer and the plan
    # do not import it (tests/unit/test_architecture.py). Not Ray's own modules:
    # importing them beside a running ray.init measured slower than not at all.
    import torch

    if cfg.tracking.enabled:
        import mlflow

        if cfg.tracking.log_model:
            import mlflow.pytorch  # noqa: F401
            import torch

            torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
            # Also measured (issue #18): the model's logging spent ~0.5 s mapping
            # every installed distribution to its modules (to check the pinned
            # requirements) and ~0.3 s importing IPython (to tag whether this is a
            # notebook). Both are cached for the process; private MLflow helpers, so
            # a release that moves them just loses the head start (errors are
            # ignored here, see run_job).
            from mlflow.tracking.context.registry import resolve_tags
            from mlflow.utils.requirements_utils import _init_modules_to_packages_map

            resolve_tags()
            _init_modules_to_packages_map()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


def main_guard(argv: Sequence[str], *, config_dir: Path) -> None:
    """Exit with status 2 and every problem listed if the command line is bad."""

    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    if any(re.match(r"^--(help|info|cfg|hydra-help)", a) for a in argv):
        return
    problems = preflight(overrides, config_dir=config_dir, sweep=multirun, validate_all=False)
    if problems:
        import sys

        from rayfed.job import EXIT_CONFIG, print_problems

        print_problems(problems, started=False)
        sys.exit(EXIT_CONFIG)
