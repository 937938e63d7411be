"""The one job runner behind ``jobs/*.py``: convert → check → start Ray → run → report.

Every job does the same five things around its own work, so they live here once:

1. convert the composed ``DictConfig`` into the job's typed config (once; the
   library never sees a ``DictConfig``), with Hydra's run directory as ``output_dir``;
2. check it: every problem is printed, each naming its key, and the process exits
   with status 2 before anything starts;
3. start (or join) Ray through :mod:`rayfed.runtime`, if the job needs it;
4. run;
5. on failure, leave ``summary.json`` with ``status`` FAILED (KILLED on Ctrl-C),
   the error and its traceback, and exit 1 (130 when interrupted) with one line
   naming the cause. The traceback is printed only with ``hydra.verbose=true`` or
   ``RAYFED_TRACEBACK=1``.

A run function that knows more about a failure (rounds done, its MLflow run) writes
the failure summary itself with :func:`record_failure`; the runner then leaves
that one in place rather than writing a second.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rayfed.errors import ConfigError, RayfedError
from rayfed.runtime import RaySettings, start
from rayfed.timing import mark

if TYPE_CHECKING:
    from rayfed.tracking.base import RunStatus, Tracker

C = TypeVar("C")
R = TypeVar("R")

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
TRACEBACK_ENV = "RAYFED_TRACEBACK"
# Set on an exception once its failure summary is written, so that an outer
# recorder does not overwrite the inner, more detailed one.
_RECORDED = "_rayfed_failure_recorded"


def failure_status(exc: BaseException) -> RunStatus:
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


def failure_summary(exc: BaseException, details: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """``summary.json``'s content for a run that ended with ``exc``."""
    return {**(details or {}), "status": failure_status(exc),
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc, limit=8))}


def record_failure(exc: BaseException, summary_path: Path, *, tracker: Tracker | None = None,
                   details: Mapping[str, Any] | None = None) -> None:
    """Write the failure summary of ``exc`` (once: an exception already recorded by
    an inner call is left alone) and end ``tracker``'s run FAILED or KILLED.
    ``details``: what the run knows so far (rounds done, its MLflow run)."""
    if getattr(exc, _RECORDED, False):
        return
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(failure_summary(exc, details), indent=2, default=str)
                            + "\n")
    if tracker is not None:
        if tracker.run_id:
            tracker.log_artifact(summary_path)
        tracker.finish(failure_status(exc))
    # An exception type with __slots__ cannot carry the mark: recorded twice at worst.
    with suppress(AttributeError):
        setattr(exc, _RECORDED, True)


def traceback_wanted(hydra_verbose: Any = False) -> bool:
    """Print tracebacks? Only when asked: ``hydra.verbose`` or ``RAYFED_TRACEBACK=1``."""
    return bool(hydra_verbose) or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def failure_line(exc: BaseException, *, summary_path: Path) -> str:
    """The one line a failed job prints: the cause, and where to read more."""
    if isinstance(exc, KeyboardInterrupt):
        return (f"rayfed: interrupted; what finished so far is in {summary_path.parent} "
                f"(summary.json: status KILLED)")
    message = " ".join(str(exc).split())
    if isinstance(exc, RayfedError):
        return f"rayfed: run FAILED: {message}"
    return (f"rayfed: run FAILED with an unexpected {type(exc).__name__}: {message} "
            f"(traceback in {summary_path}; set {TRACEBACK_ENV}=1 or hydra.verbose=true "
            "to print it)")


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_RUNTIME


def print_problems(problems: list[str], *, started: bool) -> None:
    tail = "" if started else "; nothing was started"
    print(f"rayfed: invalid configuration ({len(problems)} problem(s)){tail}:",
          file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)


def _hydra() -> tuple[str | None, Any]:
    """Hydra's run directory and ``hydra.verbose``, when running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, False
    hc = HydraConfig.get()
    return hc.runtime.output_dir, hc.verbose


def _quietly(fn: Callable[[Any], None], arg: Any) -> None:
    with suppress(Exception):
        fn(arg)


def run_job(dict_cfg: Any, *, convert: Callable[[Any], C],
            check: Callable[[C], list[str]] | None = None,
            plan: Callable[[C], Any] | None = None, run: Callable[[Any], R],
            ray: Callable[[C], RaySettings] | None = None,
            warm: Callable[[Any], None] | None = None) -> R:
    """Convert, check (or plan), start Ray (if ``ray`` says how), run; exit 2 or 1.

    ``convert`` turns the ``DictConfig`` into a dataclass with an ``output_dir``
    field, which is set to Hydra's run directory here. ``check`` returns every
    problem (empty: fine); a job that resolves its config into a plan passes
    ``plan`` instead, which validates while it plans (raising ``ConfigError``), and
    ``run`` then receives the plan. Returns what ``run`` returns (Hydra sweeps
    optimise it). ``warm(plan)``: work the run will need that needs neither Ray nor
    the run's state (imports), begun in a background thread once the config is
    valid, so that it overlaps Ray's start-up; its errors are left for the run's
    own imports to raise.
    """
    out_dir, verbose = _hydra()
    try:
        cfg = convert(dict_cfg)
    except ConfigError as exc:
        print_problems(exc.problems, started=False)
        sys.exit(EXIT_CONFIG)
    if out_dir is not None:
        cfg = replace(cfg, output_dir=out_dir)  # type: ignore[type-var]
    problems = check(cfg) if check is not None else []
    target: Any = cfg
    if plan is not None and not problems:
        try:
            target = plan(cfg)
        except ConfigError as exc:
            problems = exc.problems
    if problems:
        print_problems(problems, started=False)
        sys.exit(EXIT_CONFIG)
    mark("plan")
    summary_path = Path(getattr(cfg, "output_dir", ".")) / "summary.json"
    if warm is not None:
        threading.Thread(target=_quietly, args=(warm, target), name="rayfed-warm",
                         daemon=True).start()
    try:
        if ray is not None:
            start(ray(cfg))
            mark("ray_init")
        return run(target)
    except SystemExit:
        raise
    except BaseException as exc:
        record_failure(exc, summary_path)
        if traceback_wanted(verbose):
            traceback.print_exception(exc)
        if isinstance(exc, ConfigError):
            print_problems(exc.problems, started=True)
        else:
            print(failure_line(exc, summary_path=summary_path), file=sys.stderr)
        sys.exit(exit_code(exc))
