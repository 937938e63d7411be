"""Issue #9, faults F1–F7: one test per guarantee, on real Ray, asserting what it measures.

F1–F4 run on the session's local Ray (``ray_session``). F5 and F6 kill a real
driver process with SIGKILL; F7 builds its own multi-node cluster
(``ray.cluster_utils.Cluster``). Those three run their drivers as subprocesses,
so that each has a Ray of its own and the session's Ray is left alone.
docs/reliability.md has one row per test with the values it measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch

import rayfed.fl.orchestrator as orchestrator_module
from rayfed.config import FaultConfig
from rayfed.data.federated import load_test_split
from rayfed.errors import CheckpointError
from rayfed.fl.checkpoint import CheckpointDir, load_checkpoint
from rayfed.fl.host import ParticipantHost
from rayfed.fl.orchestrator import Orchestrator
from rayfed.fl.rounds import participant_seed, select_participants
from rayfed.models import build_model, get_flat, set_flat, spec_from_config
from rayfed.plan import resolve
from rayfed.train import evaluate
from rayfed.types import FitIns, RoundDecision
from tests.conftest import REPO, small_config

pytestmark = pytest.mark.usefixtures("ray_session")

# Ten participants, all selected each round; lr and epochs such that 6 rounds reach
# ~92% test accuracy on digits, so that "within 2 points" compares converged models.
TEN = {"num_clients": 10, "clients_per_round": 10, "min_clients": 5, "rounds": 6,
       "local_epochs": 2, "lr": 0.3, "batch_size": 16,
       # The next round waits up to half of this for crashed actors to restart; a
       # generous deadline costs nothing when every call returns early.
       "round_timeout_s": 120}


def fedavg_reference(cfg, *, dropped: dict[int, Iterable[int]] | None = None
                     ) -> list[np.ndarray]:
    """The global weights after each round, FedAvg computed in this process with the
    same participants and seeds as the orchestrator, minus ``dropped[round]``."""
    dropped = dropped or {}
    cfg = replace(cfg, faults=FaultConfig())  # an injected crash would exit this process
    host = ParticipantHost(resolve(cfg))
    spec = spec_from_config(cfg.model, input_shape=host._data.input_shape,
                            num_classes=host._data.num_classes)
    w = get_flat(build_model(spec, seed=cfg.seed))
    rng = np.random.default_rng([cfg.seed, 0x5E1EC7])
    out = []
    for rnd in range(1, cfg.fl.rounds + 1):
        ids = select_participants(rng, num_clients=cfg.fl.num_clients,
                                  k=cfg.fl.clients_per_round)
        ids = [i for i in ids if i not in set(dropped.get(rnd, ()))]
        res = host.fit(rnd, w, [FitIns(i, rnd, participant_seed(cfg.seed, rnd, i))
                                for i in ids])
        n = np.array([r.num_examples for r in res], dtype=np.float64)
        deltas = np.stack([r.delta for r in res]).astype(np.float64)
        w = (w + (n[:, None] * deltas).sum(0) / n.sum()).astype(np.float32)
        out.append(w)
    return out


def accuracy_of(cfg, weights: np.ndarray) -> float:
    test = load_test_split(cfg.dataset)
    spec = spec_from_config(cfg.model, input_shape=test.input_shape,
                            num_classes=test.num_classes)
    model = build_model(spec, seed=cfg.seed)
    set_flat(model, weights)
    return evaluate(model, torch.from_numpy(test.x), torch.from_numpy(test.y))[1]



def actor_pids(orch: Orchestrator) -> list[int]:
    return ray.get([a.ready.remote() for a in orch.placement.actors], timeout=120)


# -- F1 ------------------------------------------------------------------------


def test_f1_killing_30_percent_of_actors_mid_round(tmp_path):
    """3 of 10 dedicated actors die inside round 1's fit (a real process exit)."""
    victims = [1, 4, 7]
    cfg = small_config(tmp_path, fl=TEN, runtime={"placement": "dedicated", "max_restarts": 2},
                       faults={"crash_clients": victims, "rounds": [1]})
    clean = fedavg_reference(cfg)
    survivors = fedavg_reference(cfg, dropped={1: victims})
    with Orchestrator(cfg) as orch:
        pids_before = actor_pids(orch)
        rounds = orch.rounds()
        first = next(rounds)
        after_first = orch.weights.copy()
        history = [first, *rounds]
        pids_after = actor_pids(orch)
        final = orch.weights.copy()
    # The round completes with its quorum, from the 7 survivors.
    assert first.status == "completed" and first.num_reported == 7
    assert sorted((f.participant_id, f.kind) for f in first.failures) == [
        (v, "crash") for v in victims]
    err_first = float(np.abs(after_first.astype(np.float64) - survivors[0]).max())
    assert err_first <= 1e-6, err_first
    # The actors restarted (new processes), rebuilt their shards and rejoined.
    assert [i for i in range(10) if pids_before[i] != pids_after[i]] == victims
    assert [r.num_reported for r in history[1:]] == [10] * 5, [r.failures for r in history]
    assert all(r.status == "completed" and not r.failures for r in history[1:])
    # Their updates after the restart are the ones an unbroken shard gives.
    err_final = float(np.abs(final.astype(np.float64) - survivors[-1]).max())
    assert err_final <= 1e-5, err_final
    acc_clean, acc = accuracy_of(cfg, clean[-1]), history[-1].test_accuracy
    assert acc is not None and abs(acc - acc_clean) <= 0.02, (acc, acc_clean)
    print(f"F1: round 1 {first.seconds:.2f}s, 7/10 reported; |w - survivors' mean| = "
          f"{err_first:.1e} (round 1), {err_final:.1e} (round 6); restarted {victims}; "
          f"accuracy {acc:.4f} vs clean {acc_clean:.4f}; round 2 (waits for the restarts) "
          f"{history[1].seconds:.2f}s")


# -- F2 ------------------------------------------------------------------------


def test_f2_killing_70_percent_aborts_the_round(tmp_path):
    """7 of 10 dedicated actors die in round 1; the quorum is 4. User-level DP on."""
    victims = [0, 2, 3, 5, 6, 8, 9]
    timeout_s = 30.0
    cfg = small_config(
        tmp_path, fl={**TEN, "rounds": 1, "min_clients": 4, "round_timeout_s": timeout_s},
        runtime={"placement": "dedicated", "max_restarts": 2},
        faults={"crash_clients": victims, "rounds": [1]},
        privacy={"name": "central_dp", "noise_multiplier": 1.0, "clipping_norm": 0.5,
                 "target_epsilon": 50.0})
    with Orchestrator(cfg) as orch:
        assert orch.privacy is not None and orch.privacy.user is not None
        before = orch.weights.tobytes()
        noise_rng_before = orch.privacy.user.rng.bit_generator.state
        eps_before = orch.privacy.user.epsilon()
        (r,) = list(orch.rounds())
        ledger = orch.privacy.user.ledger.rows()
        eps_after = orch.privacy.user.epsilon()
        noise_rng_after = orch.privacy.user.rng.bit_generator.state
        weights_after = orch.weights.tobytes()
        summary = orch.summary()
    assert r.status == "aborted"
    assert r.seconds < timeout_s, r.seconds
    assert r.reason == ("round 1 aborted: 3 of 10 selected participants reported, below the "
                        "quorum fl.min_clients=4; the global model is unchanged")
    assert sorted(f.participant_id for f in r.failures if f.kind == "crash") == victims
    assert weights_after == before
    assert summary["rounds_completed"] == 0 and summary["rounds_aborted"] == 1
    # Nothing was released: no noise was drawn for the aborted round.
    assert noise_rng_after == noise_rng_before
    # Nothing released, nothing charged: the ledger is empty and ε still 0.
    assert eps_before == 0.0 and ledger == [] and eps_after == 0.0
    print(f"F2: aborted after {r.seconds:.2f}s (deadline {timeout_s}s); weights byte-identical;"
          f" noise RNG untouched; ledger {len(ledger)} event, epsilon {eps_after:.4f}")


# -- F3 ------------------------------------------------------------------------


def test_f3_replayed_and_stale_updates_are_accepted_at_most_once(tmp_path, monkeypatch):
    """Every participant's update is delivered twice in its round (a replay), and in
    round 2 the round-1 calls are delivered again (stale round id)."""
    cfg = small_config(tmp_path, fl={"rounds": 2}, runtime={"local_aggregation": False})
    decisions: list[RoundDecision] = []
    real_decide = orchestrator_module.decide

    def recording_decide(*args: Any, **kwargs: Any) -> RoundDecision:
        decisions.append(real_decide(*args, **kwargs))
        return decisions[-1]

    monkeypatch.setattr(orchestrator_module, "decide", recording_decide)
    expected = fedavg_reference(cfg)
    with Orchestrator(cfg) as orch:
        submit = orch.placement.submit_fit
        sent: dict[int, tuple[Any, ...]] = {}

        def replaying_submit(server_round, weights_ref, tasks, **kw):
            sent[server_round] = (weights_ref, tasks, kw)
            calls = submit(server_round, weights_ref, tasks, **kw)
            calls += submit(server_round, weights_ref, tasks, **kw)  # the replay
            if server_round - 1 in sent:  # the previous round's calls once more
                old_ref, old_tasks, old_kw = sent[server_round - 1]
                calls += submit(server_round - 1, old_ref, old_tasks, **old_kw)
            return calls

        orch.placement.submit_fit = replaying_submit
        history = list(orch.rounds())
        weights = orch.weights.copy()
    assert [r.status for r in history] == ["completed", "completed"]
    assert [r.num_reported for r in history] == [6, 6]
    for rnd, d in enumerate(decisions, start=1):
        assert sorted(r.participant_id for r in d.accepted) == list(range(6))
        assert all(r.server_round == rnd for r in d.accepted)
        dup = [f for f in d.rejected if "duplicate" in f.reason]
        stale = [f for f in d.rejected if f.kind == "late"]
        assert sorted(f.participant_id for f in dup) == list(range(6))
        assert sorted(f.participant_id for f in stale) == ([] if rnd == 1 else list(range(6)))
        assert all(f.server_round == 1 and "arrived in round 2" in f.reason for f in stale)
    err = float(np.abs(weights.astype(np.float64) - expected[-1]).max())
    assert err <= 1e-6, err
    print(f"F3: 6 replays rejected per round, 6 stale (round-1) updates rejected in round 2; "
          f"|w - reference| = {err:.1e}")


# -- F4 ------------------------------------------------------------------------


def wait_for_cpus(expected: float, timeout_s: float) -> float:
    """Poll Ray's resource view until ``expected`` CPUs are free; return the wait."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if ray.available_resources().get("CPU", 0.0) >= expected:
            return time.monotonic() - t0
        time.sleep(0.05)  # polling a state, not waiting for an event
    raise AssertionError(f"CPU still reserved after {timeout_s}s: "
                         f"{ray.available_resources().get('CPU', 0.0)} of {expected} free")


def test_f4_participant_slower_than_the_deadline(tmp_path):
    timeout_s, delay_s = 2.0, 5.0
    cfg = small_config(tmp_path, fl={"num_clients": 4, "clients_per_round": 4,
                                     "min_clients": 2, "rounds": 3,
                                     "round_timeout_s": timeout_s},
                       runtime={"placement": "dedicated"},
                       faults={"slow_clients": [1], "slow_delay_s": delay_s, "rounds": [1, 3]})
    total_cpus = ray.cluster_resources()["CPU"]
    with Orchestrator(cfg) as orch:
        rounds = orch.rounds()
        first = next(rounds)
        # Wait for the cut call to finish (an event, bounded), so that round 2
        # deterministically receives its round-1 update.
        stale = [p.ref for p in orch._collector._stale]
        assert len(stale) == 1
        ready, _ = ray.wait(stale, timeout=60)
        assert ready == stale
        second = next(rounds)
        third = next(rounds)  # slow again: still sleeping when the run is closed
        assert len(orch._collector._stale) == 1
    released_s = wait_for_cpus(total_cpus, timeout_s=30)
    for r in (first, third):
        assert r.status == "completed" and r.num_reported == 3
        assert [(f.participant_id, f.kind) for f in r.failures] == [(1, "timeout")]
        assert r.seconds <= timeout_s * 1.1, r.seconds
    # The round-1 update arrived during round 2 and was rejected by its round id.
    assert second.num_late_rejected == 1 and second.num_reported == 4 and not second.failures
    print(f"F4: rounds 1 and 3 closed after {first.seconds:.3f}s and {third.seconds:.3f}s "
          f"(deadline {timeout_s}s); 1 late update rejected in round 2; all {total_cpus:g} "
          f"CPUs free {released_s:.2f}s after close")


# -- drivers in subprocesses (F5, F6, F7) ----------------------------------------


@pytest.fixture
def driver_env() -> Iterator[dict[str, str]]:
    """This environment minus anything that would join the session's Ray or MLflow,
    with a Ray temp dir of its own: ``ray.cluster_utils.Cluster`` advertises its
    address in ``<temp dir>/ray_current_cluster``, which every later plain
    ``ray.init()`` on the machine would otherwise join."""
    drop = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(REPO)
    # Short: Ray's unix socket paths live under it (at most 107 bytes).
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rf-", dir="/tmp")
    yield env
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def start_driver(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A driver in its own session, so that what it starts can be cleaned up by group."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def sigkill_driver(proc: subprocess.Popen) -> None:
    """SIGKILL the driver alone, as a crash would; then wait until the Ray it started
    has gone with it (Ray's own processes share their driver's fate)."""
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    end_group(proc.pid)


def end_group(pgid: int, timeout_s: float = 30) -> None:
    import psutil

    def members() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == pgid:
                    found.append(p)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    _, alive = psutil.wait_procs(members(), timeout=timeout_s)
    for p in alive:  # only ever processes this test started
        p.kill()


def poll_for(predicate, *, timeout_s: float, what: str, interval_s: float = 0.001) -> Any:
    """Poll a file-system condition (not a sleep standing in for an event)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        found = predicate()
        if found:
            return found
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


# -- F5 ------------------------------------------------------------------------

F5_OVERRIDES = ["name=f5", "dataset=digits", "model=mlp", "model.hidden_sizes=[32]",
                "partition=iid", "fl.num_clients=6", "fl.clients_per_round=4",
                "fl.min_clients=1", "fl.rounds=5", "fl.local_epochs=1", "fl.batch_size=32",
                "fl.round_timeout_s=120", "fl.momentum=0.9", "strategy=fedadam",
                "strategy.server_lr=0.01", "privacy=central_dp",
                "privacy.noise_multiplier=1.0", "privacy.target_epsilon=100",
                "runtime.placement=pooled", "runtime.pool_size=2"]


def test_f5_sigkill_of_the_driver_then_resume_is_bit_identical(tmp_path, driver_env):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from mlflow.tracking import MlflowClient

    from rayfed.config import register_configs, to_config
    from tests.conftest import CONF

    ckpt, uri = tmp_path / "ckpt", f"sqlite:///{tmp_path}/mlflow.db"
    common = [*F5_OVERRIDES, f"checkpoint.dir={ckpt}", f"tracking.uri={uri}",
              "runtime.num_cpus=2", "tracking.log_model=false"]
    # The uninterrupted run, in this process.
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = to_config(compose("config", overrides=[
            *F5_OVERRIDES, "tracking.enabled=false", "checkpoint.enabled=false"]))
    with Orchestrator(cfg) as orch:
        list(orch.rounds())
        full, eps_full = orch.weights.copy(), orch.summary()["epsilon"]
    # The same run as a driver process, SIGKILLed once round 2's checkpoint exists.
    killed = start_driver(["jobs/federated.py", *common, f"hydra.run.dir={tmp_path}/run1"],
                          tmp_path / "run1.log", driver_env)
    try:
        def saved_rounds() -> list[int]:
            return sorted(int(p.name[6:12]) for p in ckpt.glob("f5/*/round_*.ckpt"))

        poll_for(lambda: len(saved_rounds()) >= 2 or killed.poll() is not None,
                 timeout_s=300, what="round 2's checkpoint", interval_s=0.01)
        assert killed.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
    finally:
        sigkill_driver(killed)
    k = saved_rounds()[-1]
    assert k < 5, "the driver finished before it was killed"
    (run_dir,) = ckpt.glob("f5/*/")
    killed_run_id = load_checkpoint(run_dir / f"round_{k:06d}.ckpt")["mlflow_run_id"]
    # Resume in a fresh driver.
    resumed = subprocess.run(
        [sys.executable, "jobs/federated.py", *common, "resume=true",
         f"hydra.run.dir={tmp_path}/run2"], cwd=REPO, env=driver_env,
        capture_output=True, text=True, timeout=300, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "run2" / "summary.json").read_text())
    final = CheckpointDir(run_dir, keep_last=2).latest()
    assert final is not None and final["server_round"] == 5
    assert [r.server_round for r in final["history"]] == [1, 2, 3, 4, 5]
    assert final["weights"].tobytes() == full.tobytes()
    assert summary["epsilon"] == eps_full
    assert summary["mlflow_run_id"] == killed_run_id
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(killed_run_id).info.status == "FINISHED"
    steps = sorted({m.step for m in client.get_metric_history(killed_run_id, "accuracy")})
    assert steps == [1, 2, 3, 4, 5]
    assert len(client.search_runs([client.get_run(killed_run_id).info.experiment_id])) == 1
    print(f"F5: killed after round {k}; resumed at {k + 1}; final weights bit-identical; "
          f"epsilon {summary['epsilon']:.6f} == {eps_full:.6f}; one MLflow run, steps {steps}")


# -- F6 ------------------------------------------------------------------------

# Writes round 1's checkpoint, then round 2's; both hold 256 MiB of weights, so that
# the write takes long enough for the test to see its temporary file and kill it.
F6_WRITER = """
import sys
import numpy as np
from pathlib import Path
from rayfed.fl.checkpoint import CheckpointDir

d = CheckpointDir(Path(sys.argv[1]), keep_last=2)
for r in (1, 2):
    w = np.random.default_rng(r).random(64 * 2**20, dtype=np.float32)
    d.save(r, {"server_round": r, "weights": w})
    print("saved", r, flush=True)
"""


def test_f6_driver_killed_during_a_checkpoint_write(tmp_path, driver_env):
    d = tmp_path / "ck"
    writer = start_driver(["-c", F6_WRITER, str(d)], tmp_path / "writer.log", driver_env)
    try:
        # Killed once bytes have reached the temporary file: mid-copy or mid-fsync.
        def written() -> list[Path]:
            found = []
            for p in d.glob(".round_000002.ckpt.*.tmp"):
                with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                    if p.stat().st_size > 0:
                        found.append(p)
            return found

        tmp = poll_for(written, timeout_s=120, what="bytes in round 2's temporary file")
    finally:
        sigkill_driver(writer)
    # Killed mid-write: the temporary file is there, round 2 never appeared.
    assert tmp[0].exists() and not (d / "round_000002.ckpt").exists()
    partial_bytes = tmp[0].stat().st_size
    t0 = time.monotonic()
    state = CheckpointDir(d, keep_last=2).latest()
    load_s = time.monotonic() - t0
    assert state is not None and state["server_round"] == 1
    np.testing.assert_array_equal(
        state["weights"], np.random.default_rng(1).random(64 * 2**20, dtype=np.float32))
    # The next save removes the dead writer's temporary file.
    CheckpointDir(d, keep_last=2).save(2, {"server_round": 2})
    assert sorted(p.name for p in d.iterdir()) == ["round_000001.ckpt", "round_000002.ckpt"]
    # A corrupt checkpoint is a clear error, at once: truncated like a torn write.
    blob = (d / "round_000001.ckpt").read_bytes()
    (d / "round_000001.ckpt").write_bytes(blob[: len(blob) // 2])
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match=r"corrupt.*delete it"):
        load_checkpoint(d / "round_000001.ckpt")
    corrupt_s = time.monotonic() - t0
    assert corrupt_s < 5
    print(f"F6: killed with {partial_bytes / 2**20:.0f} of 256 MiB written; round 1 loaded "
          f"intact in {load_s:.2f}s; truncated checkpoint refused in {corrupt_s:.2f}s")


def test_f6_resume_from_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    """The run directory a resumed orchestrator finds: LATEST and a checkpoint with
    one flipped byte. It must refuse before starting Ray or any actor."""
    from dataclasses import asdict

    from rayfed.fl.checkpoint import RunCheckpoints, load_key
    from rayfed.plan import resolve

    cfg = small_config(tmp_path, checkpoint={"enabled": True}, resume=True)
    root = tmp_path / "ckpt" / cfg.name
    run = RunCheckpoints.start(root, config=asdict(cfg), config_hash=resolve(cfg).config_hash,
                               keep_last=2, run_id="run1", key=load_key())
    run.save(2, {"server_round": 2})
    latest = root / "run1" / "round_000002.ckpt"
    blob = bytearray(latest.read_bytes())
    blob[-10] ^= 0xFF
    latest.write_bytes(bytes(blob))
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match=r"round_000002\.ckpt is corrupt"):
        Orchestrator(cfg)
    assert time.monotonic() - t0 < 30


# -- F7 ------------------------------------------------------------------------

# A head without CPUs (the driver) and three 1-CPU worker nodes; six dedicated
# participants of 0.5 CPU fill them, two per node. After round 1 the first worker
# node is removed with its two participants (a third), and no node has room for
# their actors to restart.
F7_DRIVER = """\
import json
import sys
import time
from pathlib import Path

import psutil
import ray
from ray.cluster_utils import Cluster

from rayfed.fl.orchestrator import Orchestrator
from tests.conftest import small_config

tmp = Path(sys.argv[1])
store = 80 * 2**20
cluster = Cluster(initialize_head=True,
                  head_node_args={"num_cpus": 0, "object_store_memory": store,
                                  "include_dashboard": False})
workers = [cluster.add_node(num_cpus=1, object_store_memory=store) for _ in range(3)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
cfg = small_config(tmp, fl={"num_clients": 6, "clients_per_round": 6, "min_clients": 3,
                            "rounds": 4, "round_timeout_s": 20},
                   runtime={"placement": "dedicated", "actor_num_cpus": 0.5,
                            "max_restarts": 2})
out = {}
t0 = time.monotonic()
with Orchestrator(cfg) as orch:
    pids = ray.get([a.ready.remote() for a in orch.placement.actors])
    raylet = {w.all_processes["raylet"][0].process.pid: w for w in workers}
    node_of = [raylet.get(psutil.Process(p).ppid()) for p in pids]
    rounds = orch.rounds()
    history = [next(rounds)]
    victim = workers[0]
    out["removed"] = [i for i, n in enumerate(node_of) if n is victim]
    cluster.remove_node(victim)
    history += list(rounds)
    out["rounds"] = [{"status": r.status, "reported": r.num_reported, "seconds": r.seconds,
                      "failures": sorted([f.participant_id, f.kind] for f in r.failures)}
                     for r in history]
    out["summary_rounds_completed"] = orch.summary()["rounds_completed"]
out["wall_s"] = time.monotonic() - t0
print("RESULT " + json.dumps(out), flush=True)
ray.shutdown()
cluster.shutdown()
"""


def test_f7_removing_a_worker_node_with_a_third_of_the_participants(tmp_path, driver_env):
    timeout_s = 20.0
    proc = subprocess.run([sys.executable, "-c", F7_DRIVER, str(tmp_path)], cwd=REPO,
                          env=driver_env, capture_output=True, text=True, timeout=480,
                          start_new_session=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    removed, rounds = out["removed"], out["rounds"]
    assert len(removed) == 2
    assert [r["status"] for r in rounds] == ["completed"] * 4
    assert [r["reported"] for r in rounds] == [6, 4, 4, 4]
    for r in rounds[1:]:
        assert r["failures"] == [[pid, "crash"] for pid in removed]
    # The lost actors are waited for once (round 3, up to half the deadline); round 4
    # does not wait again for actors that have nowhere to restart.
    assert rounds[3]["seconds"] < timeout_s / 4, rounds[3]["seconds"]
    print(f"F7: removed the node of participants {removed}; rounds "
          f"{[round(r['seconds'], 2) for r in rounds]} s, reported "
          f"{[r['reported'] for r in rounds]}; no exception reached the driver")
