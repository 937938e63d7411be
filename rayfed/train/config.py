"""Typed schema of the Ray Train DDP job, registered in Hydra's ConfigStore as ``train_base``.

``conf/train/*.yaml`` (cpu, gpu profiles) and ``conf/train_job.yaml`` hold
values; the ``dataset``, ``model`` and ``privacy`` groups are the federated
job's. ``jobs/train_ddp.py`` converts its ``DictConfig`` once with
:func:`to_train_job_config`; :func:`validate` returns every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayfed.data.config import DatasetConfig, dataset_problems
from rayfed.errors import ConfigError
from rayfed.models.config import ModelConfig, model_problems
from rayfed.privacy.config import PrivacyConfig, privacy_problems
from rayfed.schema import register, to_typed
from rayfed.tracking.config import TrackingConfig
from rayfed.train.precision import precision_problems

TRAINERS = ("local", "ddp")
DEVICES = ("auto", "cpu", "cuda")

OPTIMIZERS = ("sgd", "adam")


@dataclass
class ParticipantConfig:
    """How a participant runs its local round (``participant.*``)."""

    # local: in the participant's own process; ddp: a Ray Train DDP job across
    # the participant's own workers (e.g. a hospital's GPUs).
    trainer: str = "local"
    num_workers: int = 2
    use_gpu: bool = False
    # Ray resources per worker, e.g. {GPU: 1, hospital_a: 1}; empty = 1 CPU (+1 GPU).
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    # fp32 | bf16 | fp16: torch.autocast over local training (fp16 adds a GradScaler).
    precision: str = "fp32"
    # Where the local round runs: auto (CUDA when the actor has a GPU, else CPU,
    # said once in the log), cpu, or cuda (an error where there is none).
    device: str = "auto"
    # Ray Train storage; null = a temporary directory (a single-node cluster only).
    storage_path: str | None = None


@dataclass
class TrainFaultConfig:
    """Chaos injection: rank ``crash_rank`` exits (a real process death) when it
    reaches epoch ``crash_epoch`` of a run that has not yet been restored."""

    crash_rank: int | None = None
    crash_epoch: int = 1


@dataclass
class TrainConfig:
    """How the DDP job trains (``conf/train/``)."""

    # Ray Train workers, one DDP rank each.
    num_workers: int = 2
    use_gpu: bool = False
    # Ray resources per worker, e.g. {CPU: 4, GPU: 1}; empty = Ray's default
    # (1 CPU, plus 1 GPU with use_gpu).
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    # fp32 | bf16 | fp16 (fp16 needs CUDA and uses a GradScaler).
    precision: str = "fp32"
    # CUDA only: allow TF32 tensor cores for fp32 matmuls and convolutions.
    tf32: bool = False
    epochs: int = 10
    # Per worker; the global batch is batch_size × num_workers.
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Worker-group restarts Ray Train allows; each resumes from the last checkpoint.
    max_failures: int = 0
    keep_checkpoints: int = 2
    # Where Ray Train keeps runs and checkpoints: a shared path (NFS, s3://) on a
    # multi-node cluster. null = ./ray_train_runs on this machine.
    storage_path: str | None = None
    # Name of the Ray Train run; set it with resume=true to continue that run.
    run_name: str | None = None
    # Torch intra-op threads per worker; null = Ray's default (its CPUs).
    torch_threads: int | None = None
    # DataLoader worker processes per rank (0 = load in the training process).
    loader_workers: int = 0
    # cifar10 without files under dataset.root: train on clearly labelled random
    # tensors of CIFAR-10's shape, for throughput only (accuracy is not reported).
    synthetic_if_missing: bool = False
    synthetic_examples: int = 8192
    # Each rank writes the example indices it drew, the DP noise it added per step
    # and a parameter digest after its first step here (an audit of DDP and DP).
    trace_dir: str | None = None
    faults: TrainFaultConfig = field(default_factory=TrainFaultConfig)


@dataclass
class TrainJobConfig:
    name: str = "train"
    seed: int = 0
    # Continue the Ray Train run train.run_name from its latest checkpoint.
    resume: bool = False
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # privacy=local_dp here is record-level DP-SGD over the whole training set.
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(
        experiment="rayfed-train", log_model=False))
    # Empty (and RAY_ADDRESS unset): start a local Ray with this many CPUs.
    ray_address: str | None = None
    num_cpus: int | None = None
    output_dir: str = "."


def register_train_configs() -> None:
    """Register the schema with Hydra's ConfigStore (idempotent)."""
    register("train_base", TrainJobConfig)


def to_train_job_config(cfg: Any) -> TrainJobConfig:
    return to_typed(cfg, TrainJobConfig, name="train_base", primary="conf/train_job.yaml")


def scaling_problems(key: str, *, num_workers: int, use_gpu: bool,
                     resources_per_worker: dict[str, float], precision: str) -> list[str]:
    """Problems shared by ``train.*`` and ``participant.*``."""
    p = precision_problems(precision, use_gpu=use_gpu, key=key)
    if num_workers < 1:
        p.append(f"{key}.num_workers={num_workers} must be >= 1 (one DDP rank per worker)")
    bad = {k: v for k, v in resources_per_worker.items() if v < 0}
    if bad:
        p.append(f"{key}.resources_per_worker has negative amounts {bad}; use amounts >= 0")
    if resources_per_worker.get("GPU", 0) > 0 and not use_gpu:
        p.append(f"{key}.resources_per_worker asks for GPUs but {key}.use_gpu=false; "
                 f"set {key}.use_gpu=true or drop the GPU key")
    return p


def validate(job: TrainJobConfig) -> list[str]:
    """Every problem with ``job``, each naming its key and the fix."""
    t = job.train
    p = scaling_problems("train", num_workers=t.num_workers, use_gpu=t.use_gpu,
                         resources_per_worker=t.resources_per_worker, precision=t.precision)

    def check(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    p += dataset_problems(job.dataset) + model_problems(job.model)
    check(t.epochs >= 1, f"train.epochs={t.epochs} must be >= 1")
    check(t.batch_size >= 1, f"train.batch_size={t.batch_size} must be >= 1 (per worker)")
    check(t.lr > 0, f"train.lr={t.lr} must be > 0")
    check(t.optimizer in OPTIMIZERS, f"train.optimizer={t.optimizer!r} is not one of "
                                     f"{list(OPTIMIZERS)}")
    check(0 <= t.momentum < 1, f"train.momentum={t.momentum} must be in [0, 1)")
    check(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
    check(t.max_failures >= -1, f"train.max_failures={t.max_failures} must be >= 0, or -1 "
                                "for unlimited restarts")
    check(t.keep_checkpoints >= 1, f"train.keep_checkpoints={t.keep_checkpoints} must be >= 1")
    check(t.torch_threads is None or t.torch_threads >= 1,
          f"train.torch_threads={t.torch_threads} must be >= 1 or null")
    check(t.loader_workers >= 0, f"train.loader_workers={t.loader_workers} must be >= 0")
    check(t.synthetic_examples >= t.batch_size * t.num_workers,
          f"train.synthetic_examples={t.synthetic_examples} must cover at least one global "
          f"batch ({t.batch_size * t.num_workers})")
    check(not (t.synthetic_if_missing and job.dataset.name != "cifar10"),
          "train.synthetic_if_missing applies to dataset=cifar10 only; the small data sets "
          "are always real (set it to false)")
    check(not (job.resume and not t.run_name),
          "resume=true needs train.run_name: the name of the Ray Train run to continue "
          "(it is in that run's summary.json as ray_train_run)")
    f = t.faults
    if f.crash_rank is not None:
        check(0 <= f.crash_rank < max(t.num_workers, 1),
              f"train.faults.crash_rank={f.crash_rank} must be a rank in 0..num_workers-1")
        check(0 <= f.crash_epoch < t.epochs,
              f"train.faults.crash_epoch={f.crash_epoch} must be in 0..train.epochs-1")
    p.extend(_privacy_problems(job))
    return p


def _privacy_problems(job: TrainJobConfig) -> list[str]:
    pc = job.privacy
    if pc.name == "none":
        return []
    p = privacy_problems(pc)
    if pc.name != "local_dp":
        p.append(f"privacy={pc.name} does not apply to centralized training; use "
                 "privacy=local_dp (record-level DP-SGD across the DDP ranks) or privacy=none")
    if job.train.precision != "fp32":
        p.append(f"privacy=local_dp with train.precision={job.train.precision}: Opacus's "
                 "per-sample gradients are computed in fp32 only; use train.precision=fp32")
    return p


def participant_problems(pc: ParticipantConfig) -> list[str]:
    """Problems with the ``participant`` section on its own."""
    if pc.trainer not in TRAINERS:
        return [f"participant.trainer={pc.trainer!r} is not one of {list(TRAINERS)}"]
    if pc.device not in DEVICES:
        return [f"participant.device={pc.device!r} is not one of {list(DEVICES)}"]
    if pc.trainer == "local":
        # auto may land on CUDA; fp16 is refused at run time if it does not.
        return precision_problems(pc.precision, use_gpu=pc.device != "cpu", key="participant")
    return scaling_problems("participant", num_workers=pc.num_workers, use_gpu=pc.use_gpu,
                            resources_per_worker=pc.resources_per_worker,
                            precision=pc.precision)


def check_train_job(job: TrainJobConfig) -> TrainJobConfig:
    problems = validate(job)
    if problems:
        raise ConfigError(problems)
    return job
