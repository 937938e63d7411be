"""Issue #17: docs/configuration.md is generated from the schema and fails this
test when stale; `--help` lists only the federated job's groups."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rayfed.config import Config
from rayfed.launch import GROUPS
from rayfed.overrides import schema_of

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docs"))

import gen_configuration  # noqa: E402


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_committed_doc_matches_the_schema() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "docs" / "gen_configuration.py"),
                           "--check"], env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_doc_covers_every_key_and_group_option() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    schema = schema_of(Config())
    sections = gen_configuration.section_classes()
    leaves = [k for k in schema.keys if k not in sections]
    missing = [k for k in leaves if f"| `{k}` |" not in doc]
    assert not missing, missing
    for group in GROUPS:
        for option in (REPO / "conf" / group).glob("*.yaml"):
            assert f"| `{option.stem}` |" in doc, (group, option.stem)
    assert "`cnn1d` | 1-D convolutional network for sequences (`mnist1d`) | " \
           "`channels=[32, 32, 32]`" in doc


def test_field_comments_come_from_the_class_source_wherever_it_lives() -> None:
    @dataclass
    class Section:
        # Two lines
        # of comment.
        a: int = 1
        b: str = "x"  # a trailing comment is not a meaning

    assert gen_configuration.field_comments(Section) == {"a": "Two lines of comment."}


def test_help_lists_this_jobs_groups_only() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "federated.py"), "--help"],
                          env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0]: line.split(":")[1].strip() for line in groups.splitlines()
              if ":" in line and not line.startswith("Compose")}
    expected = {g: ", ".join(sorted(p.stem for p in (REPO / "conf" / g).glob("*.yaml")))
                for g in GROUPS}
    assert listed == expected
