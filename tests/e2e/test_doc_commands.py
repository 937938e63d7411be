"""Issue #17: every fenced shell command in README.md and docs/*.md that starts with
`python` or `ray` runs and succeeds, or is listed in SKIPPED with the reason.

To stay within a few minutes on 2 cores, the test shortens what it runs, and says
so here:
* `python jobs/federated.py <overrides>` (no `-m`): the job's own steps in this
  process on the session's local Ray: the command-line check (`preflight`, which
  exits 2 in the job), then the run, with SHORT appended (fewer rounds, tracking
  and checkpoints in a temporary folder, no model logging) and EXTRA where listed;
  the run must finish. `resume=true` commands continue the default run before them.
* `ray job submit ... -- python jobs/federated.py <overrides>`: the overrides must
  pass the command-line check (the job itself needs a running cluster; the jobs
  are submitted for real by tests/e2e/test_cluster_jobs.py).
* SUBPROCESS commands run as written through the real command line, with their
  shortening appended; they must exit 0.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from rayfed.config import check, register_configs, to_config
from rayfed.launch import preflight, run_federated
from tests.conftest import CONF, REPO
from tests.e2e.test_federated_job import job_env

pytestmark = pytest.mark.slow

FEDERATED = "python jobs/federated.py"
SHORT = ["fl.rounds=1", "tracking.log_model=false"]
# Appended after SHORT for these commands (matched on the command's overrides).
EXTRA = {
    "resume=true": ["fl.rounds=2"],
    "fl.rounds=100 resume=true": ["fl.rounds=3"],
    "experiment=cross_device": ["fl.num_clients=200", "fl.clients_per_round=20",
                                "fl.min_clients=10"],
}
# Run through the real command line, with these overrides appended.
SUBPROCESS = {
    f"{FEDERATED} -m strategy=fedavg,fedprox seed=0,1": [
        "fl.rounds=1", "fl.num_clients=4", "fl.clients_per_round=2", "fl.min_clients=1",
        "runtime.pool_size=1", "checkpoint.enabled=false", "tracking.log_model=false",
        "model.hidden_sizes=[16]"],
    "python jobs/train_ddp.py": ["train.epochs=1"],
    "python jobs/offload.py offload=small offload.policy=greedy_eft offload.num_tasks=200 "
    "offload.arrival_rate=20": ["offload.num_tasks=20"],
    # The default run (about a minute), shortened.
    "python jobs/offload.py": ["offload=small", "offload.num_tasks=20"],
    "python jobs/offload.py 'offload.policy=\"greedy_eft,all_edge\"'": [
        "offload=small", "offload.num_tasks=20"],
}
SKIPPED = {
    "pip install": "installs packages",
    "python -m pytest": "runs the test suite itself",
    "python -m benchmarks": "a benchmark of minutes; tests/integration/test_benchmark_harness.py",
    "python -m rayfed.cluster.local": "starts or stops a 4-node local cluster; "
                                      "tests/e2e/test_cluster_jobs.py runs it",
    "ray list nodes": "needs the local cluster of the line before",
    "ray start --head": "starts a Ray for the fast path; benchmarks/time_to_result.py "
                        "measures it",
    "ray stop": "stops the Ray of the line before (and every Ray of this user)",
    f"{FEDERATED} runtime.address=auto": "joins the Ray of `ray start`; "
                                         "tests/e2e/test_job_runner.py covers auto",
    "ray get-auth-token": "writes ~/.ray/auth_token for a cloud cluster",
    "ray up": "needs a cloud account", "ray down": "needs a cloud account",
    "ray dashboard": "needs a cloud cluster", "ray job logs": "needs a submitted job",
    f"{FEDERATED} -m privacy=central_dp privacy.target_epsilon=1,3,8":
        "the 6-trial sweep is tests/e2e/test_sweep.py",
    f"{FEDERATED} -m hydra/launcher=ray": "needs the ray-launcher extra and a cluster; "
                                          "tests/e2e/test_sweep.py when installed",
    f"{FEDERATED} participant.trainer=ddp": "a Ray Train job per participant and round; "
                                            "tests/integration/test_train_ddp.py",
    f"{FEDERATED} secure_agg=ckks secure_agg.decryptor_resources=":
        "needs a node with the `keyholder` resource",
    f"{FEDERATED} secure_agg=ckks16384": "same path as secure_agg=ckks (run), larger keys",
    "python jobs/train_ddp.py train=gpu": "needs CUDA",
    "python jobs/train_ddp.py train.precision=bf16": "python jobs/train_ddp.py (run) in bf16; "
                                                     "tests/integration/test_train_ddp.py",
    "python jobs/train_ddp.py dataset=cifar10": "tests/integration/test_train_ddp.py",
    "python jobs/train_ddp.py privacy=local_dp": "tests/integration/test_train_ddp.py",
    "python jobs/train_ddp.py resume=true": "names a run of the reader's own",
    "python jobs/offload.py offload.policy=all": "the full offload study (minutes); the "
                                                 "small fleet runs above",
    "python jobs/offload.py offload.workload": "names an MLflow model of the reader's own",
    "ray job submit --working-dir . -- python jobs/offload.py":
        "needs a running cluster; tests/e2e/test_cluster_jobs.py submits it",
    "python /path/to/rayfed/jobs/federated.py": "the walkthrough of docs/your_own_data.md on "
                                                "files a reader writes first",
    "ray job submit --working-dir . --runtime-env-json": "needs a cluster with one node per "
                                                         "site and the walkthrough's files; "
                                                         "tests/e2e/test_site_jobs.py submits "
                                                         "it",
    "python -m rayfed.data.make_sites": "tests/unit/data/test_make_sites.py runs it",
    "python jobs/privacy_audit.py": "200,000 trials per world; "
                                    "tests/unit/privacy and the audit's own tests",
}


def doc_commands() -> list[tuple[str, str]]:
    """(file, command) for each fenced shell line starting with python or ray;
    continuation lines joined, comments and a `$ ` prompt dropped."""
    out = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for lang, body in re.findall(r"```(\w*)\n(.*?)```", path.read_text(), re.S):
            if lang not in ("", "bash", "sh", "shell", "console"):
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith(("python ", "ray ")):
                    words = shlex.split(line, comments=True)
                    out.append((path.name, " ".join(shlex.quote(w) for w in words)))
    return out


def skip_reason(command: str) -> str | None:
    plain = " ".join(shlex.split(command))
    return next((r for prefix, r in SKIPPED.items() if plain.startswith(prefix)), None)


def federated_overrides(command: str) -> list[str] | None:
    """The overrides of a plain `python jobs/federated.py` run (no -m)."""
    if command == FEDERATED or command.startswith(f"{FEDERATED} "):
        words = shlex.split(command)[2:]
        return None if "-m" in words else words
    return None


def submitted_overrides(command: str) -> list[str] | None:
    if command.startswith("ray job submit") and f"-- {FEDERATED}" in command:
        # A placeholder such as `<head private IP>` stands for a value of the reader's.
        tail = re.sub(r"<[^>]*>", "placeholder", command.split(f"-- {FEDERATED}", 1)[1])
        return shlex.split(tail)
    return None


def test_every_doc_command_is_run_or_skipped_with_a_reason():
    unhandled = [(f, c) for f, c in doc_commands()
                 if skip_reason(c) is None and federated_overrides(c) is None
                 and submitted_overrides(c) is None
                 and not any(c == s or c.startswith(f"{s} ") for s in SUBPROCESS)
                 and c not in SUBPROCESS]
    assert not unhandled, unhandled


def test_submitted_federated_jobs_pass_the_command_line_check():
    for file, command in doc_commands():
        overrides = submitted_overrides(command)
        if overrides is not None and skip_reason(command) is None:
            GlobalHydra.instance().clear()
            problems = preflight(overrides, config_dir=CONF)
            assert problems == [], (file, command, problems)


def test_federated_doc_commands_run(tmp_path, ray_session):
    seen: set[tuple[str, ...]] = set()
    commands = [(f, c, o) for f, c in doc_commands()
                if skip_reason(c) is None and (o := federated_overrides(c)) is not None]
    # resume=true continues the default run: run that first.
    commands.sort(key=lambda fco: "resume=true" in fco[2])
    register_configs()
    for i, (file, command, overrides) in enumerate(commands):
        if tuple(overrides) in seen:
            continue
        seen.add(tuple(overrides))
        # "Continue the last run": the default run and its resumes have a checkpoint
        # folder of their own, so that the last run of the name is the default one
        # (other commands above share the name digits-mlp-fedavg with other configs).
        chain = not overrides or "resume=true" in overrides
        args = [*overrides, *SHORT, *EXTRA.get(" ".join(overrides), []),
                f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                f"checkpoint.dir={tmp_path}/{'resume' if chain else 'checkpoints'}"]
        GlobalHydra.instance().clear()
        assert preflight(args, config_dir=CONF) == [], (file, command)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = check(to_config(compose("config", overrides=args)))
        cfg.output_dir = str(tmp_path / f"run{i}")
        summary = run_federated(cfg, show_progress=False)
        assert summary["status"] == "FINISHED", (file, command, summary)
    assert len(seen) >= 10


@pytest.mark.parametrize("command", sorted(SUBPROCESS))
def test_subprocess_doc_commands_exit_0(command, tmp_path):
    assert any(c == command for _, c in doc_commands()), f"no longer in the docs: {command}"
    script, *words = shlex.split(command)[1:]
    args = [str(REPO / script), *words, *SUBPROCESS[command],
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=job_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (command, proc.stderr[-3000:])


def test_skip_list_has_no_stale_entries():
    commands = [c for _, c in doc_commands()]
    stale = [p for p in SKIPPED if p != "pip install"
             and not any(" ".join(shlex.split(c)).startswith(p) for c in commands)]
    assert not stale, stale
