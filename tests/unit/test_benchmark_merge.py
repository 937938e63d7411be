"""The harness's --only merge keeps every other section as generated, and the
phase marks round-trip (rayfed.timing)."""

from __future__ import annotations

import json

from benchmarks.__main__ import BENCHMARKS, merge, split_sections
from rayfed.timing import TIMING_ENV, mark, parse

OLD = "\n".join([
    "# Benchmark results", "", "- Machine: x", "",
    f"## {BENCHMARKS['overhead']}", "", "old overhead table", "",
    f"## {BENCHMARKS['time_to_result']}", "", "old ttr", "",
    "All benchmarks took 5 s; load average at the end: 1.", ""])


def test_merge_replaces_only_the_sections_run(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text(OLD)
    out.with_suffix(".json").write_text(json.dumps({"overhead": {"a": 1},
                                                    "time_to_result": {"b": 2}}))
    merge(out, {"time_to_result": ["", "new ttr", ""], "private_round": ["", "new pr", ""]},
          {"time_to_result": {"b": 3}, "private_round": {"c": 4}},
          command="python -m benchmarks --only time_to_result --only private_round",
          took_s=1.0)
    header, sections = split_sections(out.read_text())
    assert "old overhead table" in sections[BENCHMARKS["overhead"]]
    assert "new ttr" in sections[BENCHMARKS["time_to_result"]]
    assert "old ttr" not in out.read_text()
    assert "new pr" in sections[BENCHMARKS["private_round"]]
    # The harness's order, not the order of the run.
    assert list(sections) == [BENCHMARKS[k] for k in
                              ("overhead", "time_to_result", "private_round")]
    assert "- Machine: x" in header
    assert any("re-run" in line and "--only time_to_result" in line for line in header)
    assert json.loads(out.with_suffix(".json").read_text()) == {
        "overhead": {"a": 1}, "time_to_result": {"b": 3}, "private_round": {"c": 4}}


def test_marks_round_trip_through_a_file(tmp_path, monkeypatch):
    where = tmp_path / "timing.txt"
    monkeypatch.setenv(TIMING_ENV, str(where))
    mark("imports")
    mark("rounds")
    marks = parse(where.read_text() + "unrelated line\n")
    assert list(marks) == ["imports", "rounds"]
    assert marks["imports"] <= marks["rounds"]


def test_marks_cost_nothing_when_off(tmp_path, monkeypatch):
    monkeypatch.delenv(TIMING_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    mark("imports")
    assert list(tmp_path.iterdir()) == []
