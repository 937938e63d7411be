"""Issue #17: the result table shows ε and δ, fits 80 columns without cutting a
value, and rayfed's model logging no longer makes torch warn."""

from __future__ import annotations

import logging
import tempfile
import warnings

import numpy as np
import torch
from rich.console import Console

from rayfed.models.params import get_flat, set_flat
from rayfed.tracking.console import quiet_library_notices, result_table, round_log
from rayfed.tracking.mlflow import MlflowTracker

LONG = "/home/someone/projects/federated/outputs/digits-mlp-fedavg-central_dp/" \
       "2026-12-06_12-30-54/summary.json"
SUMMARY = {"status": "FINISHED", "final_accuracy": 0.9123, "epsilon": 2.93456, "delta": 1e-5,
           "privacy": "central_dp", "rounds_completed": 50, "rounds_aborted": 0,
           "wall_seconds": 41.2, "setup_seconds": 13.6, "mean_round_seconds": 0.5,
           "bytes_uploaded": 123456789, "mlflow_run_id": "0dbe47a164244c5a9a203389a40d8ff0",
           "summary_path": LONG}


def render(summary: dict) -> list[str]:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(result_table(summary))
    return console.export_text().splitlines()


def test_table_fits_80_columns_and_cuts_nothing() -> None:
    lines = render(SUMMARY)
    assert max(len(line) for line in lines) <= 80, lines
    assert not any("…" in line for line in lines), lines
    text = "\n".join(lines)
    assert "".join(line.strip() for line in lines[lines.index("summary:") + 1:]) == LONG
    assert "0dbe47a164244c5a9a203389a40d8ff0" in text


def test_private_run_shows_epsilon_and_delta() -> None:
    text = "\n".join(render(SUMMARY))
    assert "ε = 2.93, δ = 1e-05 (central_dp)" in text
    plain = {k: v for k, v in SUMMARY.items() if k not in ("epsilon", "delta", "privacy")}
    assert "ε" not in "\n".join(render(plain))


def test_round_lines_reach_file_handlers_not_the_console(tmp_path) -> None:
    root = logging.getLogger()
    file_handler = logging.FileHandler(tmp_path / "job.log")
    console_records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            console_records.append(record)

    collect = Collect()
    root.addHandler(file_handler)
    root.addHandler(collect)
    try:
        with round_log() as log:
            log.info("round 1/3 completed")
    finally:
        root.removeHandler(file_handler)
        root.removeHandler(collect)
        file_handler.close()
    assert "round 1/3 completed" in (tmp_path / "job.log").read_text()
    assert not [r for r in console_records if "round 1/3" in r.getMessage()]


def test_ray_token_notice_is_dropped_only_inside_the_run() -> None:
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    collect = Collect()
    logger.addHandler(collect)
    try:
        with quiet_library_notices():
            logger.warning("Token authentication is enabled for this Ray cluster. Set ...")
            logger.warning("Token authentication is disabled for this Ray cluster.")
        logger.warning("Token authentication is enabled for this Ray cluster. Set ...")
    finally:
        logger.removeHandler(collect)
    assert seen == ["Token authentication is disabled for this Ray cluster.",
                    "Token authentication is enabled for this Ray cluster. Set ..."]


def test_logging_a_model_loaded_from_a_flat_vector_does_not_warn() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    set_flat(model, get_flat(model))  # parameters become views of one vector, as in a run
    tracker = MlflowTracker(uri=f"sqlite:///{tempfile.mkdtemp()}/m.db", experiment="x",
                            run_name="r")
    tracker.start(params={}, tags={})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_model(model, input_example=np.zeros((2, 4), np.float32))
    assert not [w for w in caught if "No complete tensor" in str(w.message)]
    tracker.finish("FINISHED")
