"""Ray Train DDP on the session's local Ray (2 CPUs, gloo): accuracy, identical
ranks, resume after a killed worker, DP noise added once, disjoint DP samples,
and a participant whose local round is a DDP job.

Each test is one Ray Train run (seconds each), so every run checks as much as it can.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rayfed.config import ParticipantConfig
from rayfed.fl.orchestrator import Orchestrator
from rayfed.train.config import TrainJobConfig, check_train_job
from rayfed.train.job import run_training
from rayfed.train.trace import read_traces
from tests.conftest import small_config

pytestmark = pytest.mark.usefixtures("ray_session")


def job_config(tmp_path: Path, **train) -> TrainJobConfig:
    job = TrainJobConfig(name="test-ddp", output_dir=str(tmp_path / "out"))
    job.model.hidden_sizes = [64]
    job.tracking.uri = f"sqlite:///{tmp_path}/mlflow.db"
    job.train.batch_size = 32
    job.train.lr = 0.05
    job.train.storage_path = str(tmp_path / "runs")
    job.train.trace_dir = str(tmp_path / "trace")
    job.train.resources_per_worker = {"CPU": 1}
    for k, v in train.items():
        setattr(job.train, k, v)
    return check_train_job(job)


def test_two_gloo_workers_reach_090_on_digits_with_identical_ranks(tmp_path):
    job = job_config(tmp_path, epochs=5, num_workers=2)
    summary = run_training(job)

    assert summary["final_accuracy"] >= 0.90
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["final_accuracy"] == summary["final_accuracy"]
    assert on_disk["precision"] == "fp32" and on_disk["num_workers"] == 2
    assert on_disk["samples_per_second"] > 0 and on_disk["synthetic_data"] is False
    assert Path(on_disk["checkpoint"]).is_dir()

    traces = read_traces(job.train.trace_dir)
    assert [t["rank"] for t in traces] == [0, 1]
    r0, r1 = traces
    # Same start, a real step taken, and bitwise-identical replicas after it
    # and after every epoch.
    assert r0["initial_digest"] == r1["initial_digest"]
    assert r0["first_step_digest"] != r0["initial_digest"]
    assert r0["first_step_digest"] == r1["first_step_digest"]
    for e in range(5):
        assert r0["epochs"][e]["digest"] == r1["epochs"][e]["digest"]
        # DistributedSampler: each rank draws half of the 1437 examples; its
        # padding repeats at most world_size - 1 of them.
        a, b = set(r0["epochs"][e]["indices"]), set(r1["epochs"][e]["indices"])
        assert len(a | b) == 1437 and len(a & b) <= 1

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=job.tracking.uri)
    history = client.get_metric_history(summary["mlflow_run_id"], "accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]  # logged by rank 0 per epoch
    final = client.get_metric_history(summary["mlflow_run_id"], "final_accuracy")
    assert [m.value for m in final] == [pytest.approx(summary["final_accuracy"])]
    assert client.get_run(summary["mlflow_run_id"]).info.status == "FINISHED"


def test_killed_worker_resumes_from_the_last_checkpoint(tmp_path):
    job = job_config(tmp_path, epochs=3, num_workers=2, max_failures=1)
    job.train.faults.crash_rank = 1
    job.train.faults.crash_epoch = 2
    job.tracking.enabled = False
    summary = run_training(job)

    traces = read_traces(job.train.trace_dir)
    first = [t for t in traces if t["start_epoch"] == 0]
    second = [t for t in traces if t["start_epoch"] == 2]
    assert len(first) == 2 and len(second) == 2
    assert all(sorted(t["epochs"]) == [0, 1] for t in first)  # rank 1 died in epoch 2
    assert all(t["restored"] and sorted(t["epochs"]) == [2] for t in second)
    # The restarted group starts from exactly the parameters of epoch 1's checkpoint.
    last_checkpointed = first[0]["epochs"][1]["digest"]
    assert all(t["initial_digest"] == last_checkpointed for t in second)
    assert summary["resumed_at_epoch"] == 2
    assert summary["final_accuracy"] >= 0.85


def test_dp_adds_noise_once_and_ranks_sample_disjoint_examples(tmp_path):
    job = job_config(tmp_path, epochs=1, num_workers=2)
    job.privacy.name = "local_dp"
    job.privacy.noise_multiplier = 1.0
    job.privacy.clipping_norm = 1.0
    job.tracking.enabled = False
    summary = run_training(check_train_job(job))

    r0, r1 = read_traces(job.train.trace_dir)
    e0, e1 = r0["epochs"][0], r1["epochs"][0]
    # Rank 0 adds N(0, σ²C²) to each of the d coordinates; rank 1 adds nothing.
    d = 64 * 64 + 64 + 64 * 10 + 10
    expected = 1.0 * 1.0 * math.sqrt(d)
    assert len(e0["noise_norms"]) == len(e1["noise_norms"]) > 5
    assert all(0.9 * expected < n < 1.1 * expected for n in e0["noise_norms"])
    assert all(n == 0.0 for n in e1["noise_norms"])
    # Poisson sampling on disjoint shards: no example is drawn by both ranks.
    assert set(e0["indices"]).isdisjoint(e1["indices"])
    assert len(e0["indices"]) > 0 and len(e1["indices"]) > 0
    # Replicas stay identical although only rank 0 drew noise.
    assert r0["epochs"][0]["digest"] == r1["epochs"][0]["digest"]
    assert 0 < summary["epsilon"] < 10 and summary["noise_multiplier"] == 1.0


def test_participant_runs_its_local_round_as_a_ddp_job(tmp_path):
    cfg = small_config(
        tmp_path, fl={"num_clients": 2, "clients_per_round": 1, "min_clients": 1, "rounds": 1,
                      "local_epochs": 8, "lr": 0.2, "round_timeout_s": 600},
        runtime={"pool_size": 1, "actor_num_cpus": 0.5},
        participant=ParticipantConfig(trainer="ddp", num_workers=2,
                                      resources_per_worker={"CPU": 0.5}))
    with Orchestrator(cfg) as orch:
        before = orch.evaluate()[1]
        (result,) = list(orch.rounds())
    assert result.status == "completed" and result.num_reported == 1
    assert result.test_accuracy is not None and result.test_accuracy > before + 0.4


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_gpu_worker_trains_with_bf16_and_reports_tf32(tmp_path):
    job = job_config(tmp_path, epochs=5, num_workers=1, use_gpu=True, precision="bf16",
                     tf32=True, resources_per_worker={"CPU": 1, "GPU": 1})
    job.tracking.enabled = False
    summary = run_training(job)
    assert summary["final_accuracy"] >= 0.90
    assert summary["tf32"] == {"tf32_matmul": True, "tf32_cudnn": True}
    (trace,) = read_traces(job.train.trace_dir)
    assert trace["device"].startswith("cuda")
