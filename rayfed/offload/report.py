"""The offloading job's report: the acceptance criteria, the policy table of
docs/offloading.md and the console table, all from a ``summary.json`` dict."""

from __future__ import annotations

from typing import Any

TABLE_COLUMNS = ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "deadline_miss_rate",
                 "makespan_s", "offload_fraction", "int8_fraction", "decision_us_p50")


def acceptance(policies: dict[str, dict[str, Any]], lower_bound_s: float) -> dict[str, Any]:
    """Issue 6's criteria, computed from the run (``None`` where a policy is missing)."""
    out: dict[str, Any] = {}
    g = policies.get("greedy_eft")
    if g is None:
        return out
    for base in ("threshold", "all_cloud"):
        if base in policies:
            b = policies[base]["p95_latency_ms"]
            out[f"p95_reduction_vs_{base}"] = 1.0 - g["p95_latency_ms"] / b
    out["makespan_over_lower_bound"] = g["makespan_s"] / lower_bound_s
    out["passed"] = (all(v >= 0.30 for k, v in out.items() if k.startswith("p95_reduction"))
                     and out["makespan_over_lower_bound"] <= 1.25)
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    """The policy table of docs/offloading.md, from a ``summary.json``."""
    cols = ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "deadline_miss_rate",
            "makespan_s", "makespan_over_lower_bound", "offload_fraction", "int8_fraction",
            "decision_us_p50")
    lines = ["| policy | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, s in summary["policies"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{s[c]:.3f}" if c.endswith(("rate", "fraction", "bound")) else f"{s[c]:.1f}"
            for c in cols) + " |")
    lines.append("")
    lines.append(f"Lower bound on the makespan: {summary['lower_bound_makespan_s']:.2f} s "
                 f"({summary['num_tasks']} tasks at {summary['arrival_rate']} tasks/s).")
    acc = summary.get("acceptance") or {}
    if acc:
        lines.append("Acceptance: " + ", ".join(
            f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}" for k, v in acc.items())
            + ".")
    return "\n".join(lines) + "\n"


def console_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"offloading: {summary['num_tasks']} tasks at "
                        f"{summary['arrival_rate']}/s; makespan lower bound "
                        f"{summary['lower_bound_makespan_s']:.2f} s")
    table.add_column("policy")
    for c in TABLE_COLUMNS:
        table.add_column(c, justify="right")
    for name, s in summary["policies"].items():
        table.add_row(name, *(f"{s[c]:.3f}" if isinstance(s[c], float) else str(s[c])
                              for c in TABLE_COLUMNS))
    return table
