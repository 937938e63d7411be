"""Hydra sweeps in MLflow: one parent run per multirun, one child run per trial.

:class:`MlflowSweepCallback` (configured in ``conf/config.yaml`` under
``hydra.callbacks``) creates the parent run in the launching process before any
trial starts, whichever launcher runs the trials (Hydra's basic launcher, or
hydra-ray-launcher's Ray tasks). Each trial finds its parent by the sweep's id
tag (:func:`find_parent`) and sets MLflow's ``mlflow.parentRunId`` tag, so the
MLflow UI nests the trials under the sweep. When the sweep ends, the callback
logs the summary: a table of the trials, the same table averaged over seeds, and
an accuracy plot over the swept keys other than the seed (the privacy–utility
curve when that key is ``privacy.target_epsilon``), with every trial as a dot and its data in
``sweep_accuracy.json``. A swept config group (``strategy=fedavg,fedprox``) is
tabulated by its choice, which the trial logs as a param named by the group.

``python -m rayfed.tracking.sweep <multirun dir | parent run id>`` writes and
logs the summary again, e.g. after more trials were added to a sweep.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

PARENT_FILE = "mlflow_parent.json"
SWEEP_ID_TAG = "rayfed.sweep_id"
SWEEP_KEYS_TAG = "rayfed.sweep_keys"
PARENT_TAG = "mlflow.parentRunId"
# Varied by seed only: averaged over in the per-setting table.
REPLICATE_KEYS = ("seed",)
METRICS = ("accuracy", "loss", "epsilon")


def swept_keys(task_overrides: Sequence[str]) -> list[str]:
    """Keys swept on the command line (``a=1,2``, ``range(..)``, ``choice(..)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _order(values: Sequence[Any]) -> tuple[tuple[int, float, str], ...]:
    """Numbers before strings, numbers by value (so 3 < 10)."""
    return tuple((0, v, "") if isinstance(v, float) else (1, 0.0, str(v)) for v in values)


def trial_rows(children: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial: its swept values, final metrics and status, in sweep order.

    ``children`` are ``{"params", "metrics", "status", "run_id"}`` mappings (what
    MLflow holds for each child run)."""
    rows = []
    for child in children:
        row: dict[str, Any] = {k: _number(child["params"].get(k)) for k in keys}
        row.update({m: child["metrics"].get(m) for m in METRICS})
        row["status"] = child["status"]
        row["run_id"] = child["run_id"]
        rows.append(row)
    return sorted(rows, key=lambda r: _order([r[k] for k in keys]))


def by_setting(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Rows averaged over replicates (seeds): mean and sample std of each metric."""
    settings = [k for k in keys if k not in REPLICATE_KEYS]
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in settings), []).append(row)
    out = []
    for values, members in groups.items():
        agg: dict[str, Any] = dict(zip(settings, values, strict=True))
        agg["trials"] = len(members)
        for m in METRICS:
            xs = [r[m] for r in members if r[m] is not None]
            agg[f"{m}_mean"] = statistics.fmean(xs) if xs else None
            agg[f"{m}_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0 if xs else None
        out.append(agg)
    return sorted(out, key=lambda a: _order([a[k] for k in settings]))


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no trials)\n"
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def sweep_series(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """What the accuracy plot draws: every trial's final accuracy at its setting,
    and each setting's mean ± sample std over its trials (seeds).

    The x axis is the swept keys other than the seed (all swept keys when only the
    seed is swept); several keys, or a config group, give categorical labels such as
    ``strategy=fedprox fl.lr=0.1``, a single numeric key a numeric axis."""
    x_keys = [k for k in keys if k not in REPLICATE_KEYS] or list(keys)

    def label(row: Mapping[str, Any]) -> Any:
        if len(x_keys) == 1:
            return row[x_keys[0]]
        return " ".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                        for k in x_keys)

    trials = [{"x": label(r), "accuracy": r["accuracy"], "run_id": r["run_id"],
               **{k: r[k] for k in keys}} for r in rows if r["accuracy"] is not None]
    groups: dict[Any, list[float]] = {}
    for t in trials:
        groups.setdefault(t["x"], []).append(t["accuracy"])
    means = [{"x": x, "accuracy_mean": statistics.fmean(accs),
              "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
              "trials": len(accs)} for x, accs in groups.items()]
    return {"x_key": " ".join(x_keys), "trials": trials, "means": means}


def plot_sweep(series: Mapping[str, Any], path: Path) -> Path:
    """Every trial's final accuracy (dots) and each setting's mean ± std (line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, trials, means = series["x_key"], series["trials"], series["means"]
    categorical = any(not isinstance(m["x"], float) for m in means)
    position = {m["x"]: i for i, m in enumerate(means)} if categorical else None

    def at(x: Any) -> float:
        return float(position[x]) if position is not None else float(x)

    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(means)), 3.5))
    ax.scatter([at(t["x"]) for t in trials], [t["accuracy"] for t in trials], s=18,
               alpha=0.6, label=f"trials ({len(trials)})")
    ax.errorbar([at(m["x"]) for m in means], [m["accuracy_mean"] for m in means],
                yerr=[m["accuracy_std"] for m in means], marker="o", capsize=3,
                label="mean ± std over seeds")
    if position is not None:
        ax.set_xticks(list(position.values()), [str(x) for x in position],
                      rotation=20 if len(means) > 3 else 0, ha="right" if len(means) > 3
                      else "center")
    elif "epsilon" in x_key and all(m["x"] > 0 for m in means):
        ax.set_xscale("log")
    ax.set_xlabel(x_key)
    ax.set_ylabel("final test accuracy")
    ax.set_title("privacy–utility" if "epsilon" in x_key else f"accuracy vs {x_key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def find_parent(client: Any, experiment: str, sweep_id: str) -> str | None:
    """The parent run of the sweep ``sweep_id`` (created by the callback), if any."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def trial_name(client: Any, parent_run_id: str | None, overrides: Sequence[str]) -> str:
    """A trial's run name: its values of the swept keys (all overrides without a parent)."""
    if parent_run_id is None:
        return " ".join(overrides)
    keys = json.loads(client.get_run(parent_run_id).data.tags.get(SWEEP_KEYS_TAG, "[]"))
    return " ".join(o for o in overrides if o.split("=", 1)[0] in keys)


def _children(client: Any, parent: Any) -> list[dict[str, Any]]:
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                              max_results=10000)
    return [{"params": r.data.params, "metrics": r.data.metrics, "status": r.info.status,
             "run_id": r.info.run_id} for r in runs]


def summarize(uri: str, parent_run_id: str, out_dir: Path) -> dict[str, Any]:
    """Write the trial table, the per-setting table and the plot to ``out_dir`` and
    log them to the parent run; returns what was written."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_run_id)
    children = _children(client, parent)
    keys = json.loads(parent.data.tags.get(SWEEP_KEYS_TAG, "[]"))
    rows = trial_rows(children, keys)
    settings = by_setting(rows, keys)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "sweep_trials.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["run_id"])
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "sweep_summary.md").write_text(
        f"# {parent.info.run_name}: {len(rows)} trials\n\n## by setting\n\n"
        + markdown_table(settings) + "\n## trials\n\n" + markdown_table(rows))
    files = [out_dir / "sweep_trials.csv", out_dir / "sweep_summary.md"]
    if keys and rows:
        # The plotted data next to the plot, for reading back without an image.
        series = sweep_series(rows, keys)
        (out_dir / "sweep_accuracy.json").write_text(json.dumps(series, indent=2) + "\n")
        files += [plot_sweep(series, out_dir / "sweep_accuracy.png"),
                  out_dir / "sweep_accuracy.json"]
    for path in files:
        client.log_artifact(parent_run_id, str(path))
    best = max((r["accuracy"] for r in rows if r["accuracy"] is not None), default=None)
    if best is not None:
        client.log_metric(parent_run_id, "best_accuracy", best)
    client.log_metric(parent_run_id, "trials", len(rows))
    return {"parent_run_id": parent_run_id, "trials": len(rows), "settings": settings,
            "files": [str(path) for path in files]}


class MlflowSweepCallback(Callback):
    """Parent MLflow run around a Hydra multirun (created before the trials start)."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        import mlflow

        from rayfed.tracking.mlflow import default_tracking_uri, git_commit
        from rayfed.tracking.store import seed_store

        tracking = config.get("tracking")
        if tracking is None or not tracking.enabled:
            return
        self.uri = tracking.uri or default_tracking_uri()
        seed_store(self.uri)
        client = mlflow.MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(tracking.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(tracking.experiment)
        sweep_dir = str(config.hydra.sweep.dir)
        overrides = list(config.hydra.overrides.task)
        keys = swept_keys(overrides)
        swept = [o for o in overrides if o.split("=", 1)[0] in keys]
        run = client.create_run(exp_id, run_name=f"sweep {config.get('name', '')}: "
                                                 + " ".join(swept), tags={
            SWEEP_ID_TAG: sweep_dir, SWEEP_KEYS_TAG: json.dumps(keys),
            "rayfed.sweep_dir": str(Path(sweep_dir).resolve()),
            "git_commit": git_commit(), "rayfed.launcher": str(
                config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]})
        self.parent_run_id = run.info.run_id
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        (Path(sweep_dir) / PARENT_FILE).write_text(json.dumps(
            {"parent_run_id": self.parent_run_id, "tracking_uri": self.uri}) + "\n")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        import mlflow

        if self.parent_run_id is None or self.uri is None:
            return
        client = mlflow.MlflowClient(tracking_uri=self.uri)
        try:
            summarize(self.uri, self.parent_run_id, Path(str(config.hydra.sweep.dir)))
            client.set_terminated(self.parent_run_id, status="FINISHED")
        except Exception:
            client.set_terminated(self.parent_run_id, status="FAILED")
            raise


def main(argv: Sequence[str] | None = None) -> int:
    from rayfed.tracking.mlflow import default_tracking_uri

    parser = argparse.ArgumentParser(prog="python -m rayfed.tracking.sweep",
                                     description="Sweep summary (tables and plot) of a "
                                                 "Hydra multirun, logged to its parent run.")
    parser.add_argument("sweep", help="the multirun dir (with mlflow_parent.json) or the "
                                      "parent run id")
    parser.add_argument("--uri", default=None, help="MLflow tracking URI (with a run id; "
                                                    "default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--out", type=Path, default=None, help="where the files go "
                                                               "(default: the multirun dir or .)")
    args = parser.parse_args(argv)
    path = Path(args.sweep)
    if path.is_dir():
        if not (path / PARENT_FILE).exists():
            parser.error(f"{path} has no {PARENT_FILE}: was it run with `-m` and tracking on?")
        meta = json.loads((path / PARENT_FILE).read_text())
        run_id, uri, out = meta["parent_run_id"], args.uri or meta["tracking_uri"], path
    else:
        run_id, uri, out = args.sweep, args.uri or default_tracking_uri(), Path(".")
    result = summarize(uri, run_id, args.out or out)
    print((Path(result["files"][1])).read_text())
    print("logged to parent run", run_id, ":", ", ".join(Path(f).name for f in result["files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
