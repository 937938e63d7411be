"""What a run prints and logs: the result table, round lines for the job's log
file, and the library notices that say nothing a user can act on.

The table fits an 80-column terminal: its values are short, and paths go below it
on lines of their own, folded rather than cut with an ellipsis. Round lines go to
the log *files* of the root logger (Hydra's ``<job>.log``) and not the console,
where the progress bar already shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

ROUND_LOGGER = "rayfed.rounds"
# Ray 2.5x logs this on every local start when RAY_AUTH_MODE is unset; it asks
# nothing of a user running locally (the "token authentication is disabled"
# warning, which is about exposure, is left alone).
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_RAY_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


def result_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The result table's rows: short values only (paths come below the table)."""
    acc = summary.get("final_accuracy")
    rows = [("status", str(summary.get("status"))),
            ("final test accuracy", f"{acc:.4f}" if acc is not None else "n/a")]
    if summary.get("epsilon") is not None:
        rows.append(("privacy (ε, δ)", f"ε = {summary['epsilon']:.2f}, "
                                       f"δ = {summary.get('delta', 0):.3g}"
                                       + (f" ({summary['privacy']})" if summary.get("privacy")
                                          else "")))
    rows += [
        ("rounds completed", f"{summary.get('rounds_completed')}"
                             f" (aborted {summary.get('rounds_aborted', 0)})"),
        ("wall seconds", f"{summary.get('wall_seconds', 0):.1f}"
                         + (f" (set-up {summary['setup_seconds']:.1f})"
                            if summary.get("setup_seconds") is not None else "")),
        ("mean round seconds", f"{summary.get('mean_round_seconds') or 0:.3f}"),
        ("bytes uploaded", f"{summary.get('bytes_uploaded', 0):,}"),
        ("MLflow run", str(summary.get("mlflow_run_id"))),
    ]
    return rows


def result_table(summary: Mapping[str, Any]) -> Any:
    """The table, then each path on its own line (folded, never cut)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="rayfed result", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in result_rows(summary):
        table.add_row(key, value)
    lines: list[Text] = []
    for key, label in (("summary_path", "summary"),):
        if summary.get(key):
            lines += [Text(f"{label}:", style="bold"), Text(str(summary[key]), overflow="fold")]
    return Group(table, *lines)


@contextmanager
def round_log() -> Iterator[logging.Logger]:
    """A logger whose lines reach the root logger's file handlers only.

    Hydra's job logging gives the root logger a console and a file handler; the
    console has the progress bar, the file (``federated.log``) should hold the
    run's log, including every round."""
    logger = logging.getLogger(ROUND_LOGGER)
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    saved = (logger.propagate, logger.level)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for h in files:
        logger.addHandler(h)
    try:
        yield logger
    finally:
        for h in files:
            logger.removeHandler(h)
        logger.propagate, _ = saved
        logger.setLevel(saved[1])


class _DropNotice(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def quiet_library_notices() -> Iterator[None]:
    """Drop Ray's token-auth notice while rayfed starts a local Ray."""
    logger = logging.getLogger(_RAY_AUTH_LOGGER)
    notice = _DropNotice(_RAY_AUTH_NOTICE)
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)
