"""The benchmark harness in its quickest mode: RESULTS.md is produced, with its
tables, ratios and acceptance rows. Nothing here is about speed.

The systems run as subprocesses with their own local Ray (as ``python -m
benchmarks`` does), so this test does not use the shared ``ray_session``.
"""

from __future__ import annotations

import json
import re

from benchmarks.__main__ import run


def test_quickest_harness_writes_the_tables(tmp_path):
    out = tmp_path / "RESULTS.md"
    run({"federated_round": ["--rounds", "3", "--repeats", "1", "--no-peers",
                             "--workloads", "small"],
         "scale": ["--rounds", "3", "--sizes", "10"]},
        out=out, command="pytest harness smoke")
    text = out.read_text()

    assert text.startswith("# Benchmark results")
    assert re.search(r"- Machine: \d+ cores .*GiB RAM, GPU: ", text)
    assert "- Versions: " in text and "ray " in text and "torch " in text
    assert "Command: `python -m benchmarks.federated_round --rounds 3" in text
    # Round-time table: the loop is its own baseline, rayfed has a measured ratio,
    # the peers say why they did not run.
    assert "| system | steady s/round | ratio vs loop |" in text
    assert re.search(r"\| plain PyTorch loop .*\| [0-9.]+ \| 1\.00× \|", text)
    assert re.search(r"\| rayfed .*\| [0-9.]+ \| [0-9.]+× \| [0-9.]+ \| \d+ \| 0\.\d{4} \|", text)
    assert text.count("not run: --no-peers") == 3  # Flower, pfl 1 worker, pfl 2 workers
    # Acceptance rows: the loop target is judged, the peer targets are not run.
    assert re.search(r"small: rayfed <= 0\.65x the single-process loop \| [0-9.]+× \| "
                     r"≤ 0\.65× \| \*\*(met|missed)\*\*", text)
    assert re.search(r"small: rayfed >= 10x faster than Flower \| n/a \| \| not run", text)
    # Scale table: one row for 10 participants with a memory figure.
    assert re.search(r"\| 10 \| [0-9.]+ \| [0-9.]+ ms \| \d+ \| [0-9.]+ \| [0-9.]+ \|", text)

    raw = json.loads(out.with_suffix(".json").read_text())
    small = raw["federated_round"]["cells"]["small"]
    # Same math: rayfed and the loop start from the bundle's weights, follow its batch
    # order, and end (up to float32 rounding in rayfed's vectorised step) equal.
    assert small["rayfed"]["max_weight_diff_vs_loop"] < 1e-5
    assert abs(small["rayfed"]["accuracy"] - small["loop"]["accuracy"]) < 1e-3
    assert raw["scale"]["rows"][0]["peak_pss_gib"] > 0
