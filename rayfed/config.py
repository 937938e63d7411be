"""Typed configuration: the schema Hydra composes into, and its validator.

The dataclasses below are registered in Hydra's ConfigStore and are the only
schema; the YAML files in ``conf/`` hold values. A job converts its ``DictConfig``
once with :func:`to_config`, and the library sees only these typed objects.

:func:`validate` collects *every* problem, naming each key, so that a user fixes
a bad command line in one go; it runs before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rayfed.errors import ConfigError

PLACEMENTS = ("pooled", "dedicated")
LOCAL_OPTIMIZERS = ("sgd", "adam")


@dataclass
class DatasetConfig:
    name: str = "digits"
    # Directory with the torchvision files for `mnist` / `cifar10`; never downloaded.
    root: str | None = None
    test_fraction: float = 0.2
    # Each participant keeps this share of its shard for local validation.
    val_fraction: float = 0.1
    # mnist1d only: how many sequences to generate.
    num_samples: int = 5000
    # Seed of the data itself (generation and the held-out test split), kept apart
    # from the experiment seed so that every experiment sees the same test set.
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    channels: list[int] = field(default_factory=lambda: [16, 32])


@dataclass
class PartitionConfig:
    name: str = "dirichlet"
    alpha: float = 0.5
    shards_per_client: int = 2
    min_samples: int = 2


@dataclass
class StrategyConfig:
    name: str = "fedavg"
    reducer: str = "weighted_mean"
    server_optimizer: str = "sgd"
    server_lr: float = 1.0
    server_momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    # FedProx (Li et al. 2020) proximal term, applied by participants.
    proximal_mu: float = 0.0
    trim_ratio: float = 0.1
    num_byzantine: int = 0
    num_selected: int = 1


@dataclass
class FLConfig:
    num_clients: int = 20
    # Participants selected per round; `client_fraction` is the alternative.
    clients_per_round: int | None = 10
    client_fraction: float | None = None
    # Quorum: a round with fewer reports aborts and leaves the model unchanged.
    min_clients: int = 1
    rounds: int = 30
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    round_timeout_s: float = 120.0
    eval_every: int = 1
    # Federated evaluation on the participants' validation splits (0 = off).
    federated_eval_every: int = 0


@dataclass
class RuntimeConfig:
    placement: str = "pooled"
    # Empty (and RAY_ADDRESS unset): start a local Ray. Otherwise join that cluster.
    address: str | None = None
    # CPUs of a local Ray; null = all cores.
    num_cpus: int | None = None
    # pooled: number of actors; null = one per CPU of the cluster.
    pool_size: int | None = None
    # CPUs reserved per actor; null = 1 when pooled, a fair share when dedicated.
    actor_num_cpus: float | None = None
    # Custom Ray resources each actor requests, e.g. {edge: 1}.
    resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 3
    # pooled + weighted mean: each actor sums its participants' updates before
    # sending (as pfl-research's workers do); the server adds the partial sums.
    local_aggregation: bool = True
    # Torch intra-op threads per actor: 1 avoids oversubscribing shared cores.
    torch_threads: int = 1
    # Plain local SGD: an actor trains its participants together, vmapped over a
    # participant axis (torch.func), in groups of vectorize_group. Same math as
    # one after the other, several times faster for small models.
    vectorize: bool = True
    vectorize_group: int = 64
    include_dashboard: bool = False


@dataclass
class TrackingConfig:
    enabled: bool = True
    # null: MLFLOW_TRACKING_URI, else an embedded sqlite file in the working dir.
    uri: str | None = None
    experiment: str = "rayfed"
    log_model: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True
    dir: str = "checkpoints"
    every: int = 1
    keep_last: int = 2


PRIVACY_MODES = ("none", "local_dp", "central_dp")
ACCOUNTANTS = ("rdp", "prv")
NOISE_PLACEMENTS = ("server", "clients")
GRAD_SAMPLE_MODES = ("hooks", "functorch")


@dataclass
class PrivacyConfig:
    """Differential privacy (``conf/privacy/``); logic in ``rayfed.privacy``.

    ``local_dp``: record-level DP-SGD at each participant (Abadi et al. 2016);
    ``clipping_norm`` is the per-sample ``max_grad_norm``. ``central_dp``:
    user-level DP-FedAvg (McMahan et al. 2018); ``clipping_norm`` bounds each
    participant's update.
    """

    name: str = "none"
    # With a target and no noise_multiplier, σ is solved for the planned run;
    # with both, σ is used and the target is enforced as a budget.
    target_epsilon: float | None = None
    # null: 1 / (10 · number of protected units), below 1/num_examples.
    delta: float | None = None
    noise_multiplier: float | None = None
    clipping_norm: float = 1.0
    accountant: str = "rdp"
    noise_placement: str = "server"
    # null: on where participants add noise under secure aggregation (the server
    # would otherwise know every noise seed), off elsewhere. Turning it off there
    # needs allow_server_known_noise=true (rayfed.privacy.settings).
    secure_rng: bool | None = None
    # Acknowledges that with secure_rng=false under secure aggregation the server
    # can regenerate and subtract the participants' noise.
    allow_server_known_noise: bool = False
    # Per-sample gradients for local_dp; hooks measured fastest for our models
    # (benchmarks/dp_overhead.py, docs/privacy.md).
    grad_sample_mode: str = "hooks"


@dataclass
class AuditConfig:
    """``jobs/privacy_audit.py``: the empirical audit of ``privacy=central_dp``."""

    # Runs of the mechanism per world (canary in / out).
    trials: int = 200_000
    # Rounds audited; null = fl.rounds.
    rounds: int | None = None
    # Multiplies the noise actually added, not the accountant's σ (0.5 = the
    # broken "noise halved" configuration the audit must flag).
    noise_scale: float = 1.0
    confidence: float = 0.95


COMPRESSION_CODECS = ("none", "int8", "topk")
FINAL_MODEL_FORMATS = ("none", "int8")


@dataclass
class CompressionConfig:
    """Update compression on the wire and int8 export of the final model
    (``conf/compression/``); logic in ``rayfed.compression``."""

    # Update codec: stochastic int8 per tensor, or top-k with error feedback.
    name: str = "none"
    # topk: share of the update's coordinates each participant sends per round.
    topk_ratio: float = 0.01
    # int8: post-training quantization of the final global model.
    final_model: str = "none"
    # Server-side examples (drawn from its held-out split) that calibrate static
    # quantization's activation ranges; the rest measure fp32 vs int8 accuracy.
    calibration_examples: int = 64
    # Batch size of the CPU latency measurement.
    latency_batch_size: int = 64


SECURE_AGG_MODES = ("none", "ckks")


@dataclass
class SecureAggConfig:
    """Secure aggregation with CKKS (``conf/secure_agg/``); logic in
    ``rayfed.secure_agg``. The aggregator only ever holds the public key."""

    name: str = "none"
    # CKKS parameters; checked against SEAL's 128-bit bound (rayfed.secure_agg.params).
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: list[int] = field(default_factory=lambda: [60, 40, 40, 60])
    global_scale_bits: int = 40
    # Threads each participant encrypts its chunks with.
    encrypt_threads: int = 2
    # The decryptor never opens a sum of fewer participants than this.
    min_participants: int = 2
    # Noise flooding of each decrypted sum against IND-CPA^D key recovery
    # (docs/security.md); in units of Σ n_i Δ_i, so the mean sees it / Σ n_i.
    decrypt_noise_std: float = 1.0e-6
    # Ray resources for the key authority / decryptor actor, e.g. {keyholder: 1}.
    decryptor_resources: dict[str, float] = field(default_factory=dict)


TRAINERS = ("local", "ddp")


@dataclass
class ParticipantConfig:
    """How a participant runs its local round (``participant.*``); checked by
    ``rayfed.train.config.participant_problems``."""

    # local: in the participant's own process; ddp: a Ray Train DDP job across
    # the participant's own workers (e.g. a hospital's GPUs).
    trainer: str = "local"
    num_workers: int = 2
    use_gpu: bool = False
    # Ray resources per worker, e.g. {GPU: 1, hospital_a: 1}; empty = 1 CPU (+1 GPU).
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"
    # Ray Train storage; null = a temporary directory (a single-node cluster only).
    storage_path: str | None = None


@dataclass
class FaultConfig:
    """Chaos injection for testing the failure paths with real actors."""

    raise_clients: list[int] = field(default_factory=list)
    slow_clients: list[int] = field(default_factory=list)
    slow_delay_s: float = 0.0
    # These participants kill their actor process (os._exit) mid-round.
    crash_clients: list[int] = field(default_factory=list)
    # Rounds in which the faults fire; empty means every round.
    rounds: list[int] = field(default_factory=list)


@dataclass
class AdversaryConfig:
    """Byzantine participants for robustness experiments (``conf/adversary/``);
    attacks in ``rayfed.adversary``, checked by ``adversary_problems``."""

    # An attack of rayfed.adversary.ATTACKS, or a malformed update of
    # rayfed.adversary.MALFORMED (nan, wrong_shape, huge_norm, ...).
    name: str = "none"
    # Share of fl.num_clients that is malicious, drawn from `seed`.
    fraction: float = 0.0
    # Explicit malicious participant ids instead of `fraction`.
    clients: list[int] = field(default_factory=list)
    # sign_flip: -scale·Δ; scaling: γ; gaussian: the noise's standard deviation.
    scale: float = 1.0
    # alie: the shift in standard deviations; null = z_max of Baruch et al. 2019.
    z_max: float | None = None
    seed: int = 0
    # Participant id -> malformed-update mode (rayfed.adversary.MALFORMED), on top
    # of `name`: several kinds of bad update in one round, for testing screening.
    malformed: dict[int, str] = field(default_factory=dict)


@dataclass
class Config:
    name: str = "default"
    seed: int = 0
    resume: bool = False
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    fl: FLConfig = field(default_factory=FLConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    participant: ParticipantConfig = field(default_factory=ParticipantConfig)
    secure_agg: SecureAggConfig = field(default_factory=SecureAggConfig)
    # Where summary.json and plots go; the job sets it to Hydra's run directory.
    output_dir: str = "."


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


def to_config(cfg: Any) -> Config:
    """Convert a composed Hydra ``DictConfig`` into the typed :class:`Config`."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):
        raise ConfigError(["the composed config is not a rayfed Config; add `- base_config` "
                           "to the defaults list of your primary config"])
    return obj


def clients_per_round(fl: FLConfig) -> int:
    """How many participants a round selects."""
    if fl.clients_per_round is not None:
        return fl.clients_per_round
    fraction = fl.client_fraction if fl.client_fraction is not None else 1.0
    return max(1, math.ceil(fraction * fl.num_clients))


def config_hash(cfg: Config) -> str:
    """Hash of everything that determines the training trajectory.

    Runtime, tracking, checkpoint and output settings, ``resume`` and
    ``fl.rounds`` are left out: resuming on another cluster, or for more rounds,
    continues the same run.
    """
    d = asdict(cfg)
    for key in ("runtime", "tracking", "checkpoint", "output_dir", "resume", "faults",
                "audit"):
        d.pop(key)
    d["fl"] = {k: v for k, v in d["fl"].items() if k != "rounds"}
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _check(problems: list[str], ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


def _choice(problems: list[str], key: str, value: str, options: Any) -> None:
    names = sorted(options)
    _check(problems, value in options,
           f"{key}={value!r} is not one of {names}; pick one of those")


def validate(cfg: Config) -> list[str]:
    """Every problem in ``cfg``, each naming its key and how to fix it."""
    # Registries are imported here (not at module import) so that importing the
    # schema stays cheap for Hydra.
    from rayfed.data import DATASETS, PARTITIONERS
    from rayfed.models import MODELS
    from rayfed.strategies import REDUCERS, SERVER_OPTIMIZERS, STRATEGY_PRESETS

    p: list[str] = []
    fl, ds, part, st, rt = cfg.fl, cfg.dataset, cfg.partition, cfg.strategy, cfg.runtime

    _choice(p, "dataset", ds.name, DATASETS)
    _check(p, 0 < ds.test_fraction < 1,
           f"dataset.test_fraction={ds.test_fraction} must be in (0, 1), e.g. 0.2")
    _check(p, 0 <= ds.val_fraction < 1,
           f"dataset.val_fraction={ds.val_fraction} must be in [0, 1), e.g. 0.1")
    _check(p, ds.num_samples >= 100,
           f"dataset.num_samples={ds.num_samples} must be >= 100")
    _choice(p, "model", cfg.model.name, MODELS)
    _check(p, all(h > 0 for h in cfg.model.hidden_sizes),
           f"model.hidden_sizes={cfg.model.hidden_sizes} must be positive widths")
    _check(p, len(cfg.model.channels) > 0 and all(c > 0 for c in cfg.model.channels),
           f"model.channels={cfg.model.channels} must be a non-empty list of positive ints")

    _choice(p, "partition", part.name, PARTITIONERS)
    _check(p, part.alpha > 0,
           f"partition.alpha={part.alpha} must be > 0; use a positive Dirichlet "
           "concentration such as 0.5 (smaller = more label skew)")
    _check(p, part.shards_per_client >= 1,
           f"partition.shards_per_client={part.shards_per_client} must be >= 1")
    _check(p, part.min_samples >= 1,
           f"partition.min_samples={part.min_samples} must be >= 1")

    _choice(p, "strategy", st.name, STRATEGY_PRESETS)
    _choice(p, "strategy.reducer", st.reducer, REDUCERS)
    _choice(p, "strategy.server_optimizer", st.server_optimizer, SERVER_OPTIMIZERS)
    _check(p, st.server_lr > 0, f"strategy.server_lr={st.server_lr} must be > 0")
    _check(p, 0 <= st.server_momentum < 1,
           f"strategy.server_momentum={st.server_momentum} must be in [0, 1)")
    _check(p, 0 <= st.beta1 < 1, f"strategy.beta1={st.beta1} must be in [0, 1)")
    _check(p, 0 <= st.beta2 < 1, f"strategy.beta2={st.beta2} must be in [0, 1)")
    _check(p, st.tau > 0, f"strategy.tau={st.tau} must be > 0, e.g. 1e-3")
    _check(p, st.proximal_mu >= 0, f"strategy.proximal_mu={st.proximal_mu} must be >= 0")
    _check(p, 0 <= st.trim_ratio < 0.5,
           f"strategy.trim_ratio={st.trim_ratio} must be in [0, 0.5)")
    _check(p, st.num_byzantine >= 0, f"strategy.num_byzantine={st.num_byzantine} must be >= 0")
    _check(p, st.num_selected >= 1, f"strategy.num_selected={st.num_selected} must be >= 1")

    _check(p, fl.num_clients >= 1, f"fl.num_clients={fl.num_clients} must be >= 1")
    if fl.clients_per_round is not None:
        _check(p, 1 <= fl.clients_per_round <= max(fl.num_clients, 1),
               f"fl.clients_per_round={fl.clients_per_round} must be between 1 and "
               f"fl.num_clients={fl.num_clients}")
    if fl.client_fraction is not None:
        _check(p, 0 < fl.client_fraction <= 1,
               f"fl.client_fraction={fl.client_fraction} must be in (0, 1]")
    _check(p, fl.clients_per_round is None or fl.client_fraction is None,
           "set only one of fl.clients_per_round and fl.client_fraction "
           "(set the other to null)")
    per_round = clients_per_round(fl)
    _check(p, 1 <= fl.min_clients <= per_round,
           f"fl.min_clients={fl.min_clients} (the quorum) must be between 1 and the "
           f"participants selected per round ({per_round})")
    if st.reducer == "krum":
        _check(p, per_round >= 2 * st.num_byzantine + 3,
               f"strategy.num_byzantine={st.num_byzantine} needs at least "
               f"2f+3={2 * st.num_byzantine + 3} participants per round for Krum, "
               f"but a round selects {per_round}")
        _check(p, st.num_selected <= per_round - st.num_byzantine,
               f"strategy.num_selected={st.num_selected} must be <= participants per "
               f"round minus strategy.num_byzantine")
    _check(p, fl.rounds >= 1, f"fl.rounds={fl.rounds} must be >= 1")
    _check(p, fl.local_epochs >= 1, f"fl.local_epochs={fl.local_epochs} must be >= 1")
    _check(p, fl.batch_size >= 1, f"fl.batch_size={fl.batch_size} must be >= 1")
    _check(p, fl.lr > 0, f"fl.lr={fl.lr} must be > 0")
    _choice(p, "fl.optimizer", fl.optimizer, LOCAL_OPTIMIZERS)
    _check(p, 0 <= fl.momentum < 1, f"fl.momentum={fl.momentum} must be in [0, 1)")
    _check(p, fl.weight_decay >= 0, f"fl.weight_decay={fl.weight_decay} must be >= 0")
    _check(p, fl.round_timeout_s > 0,
           f"fl.round_timeout_s={fl.round_timeout_s} must be > 0 seconds")
    _check(p, fl.eval_every >= 0, f"fl.eval_every={fl.eval_every} must be >= 0 (0 = end only)")
    _check(p, fl.federated_eval_every >= 0,
           f"fl.federated_eval_every={fl.federated_eval_every} must be >= 0")

    _choice(p, "runtime.placement", rt.placement, PLACEMENTS)
    _check(p, rt.num_cpus is None or rt.num_cpus >= 1,
           f"runtime.num_cpus={rt.num_cpus} must be >= 1 or null")
    _check(p, rt.pool_size is None or rt.pool_size >= 1,
           f"runtime.pool_size={rt.pool_size} must be >= 1 or null")
    _check(p, rt.actor_num_cpus is None or rt.actor_num_cpus > 0,
           f"runtime.actor_num_cpus={rt.actor_num_cpus} must be > 0 or null")
    _check(p, rt.max_restarts >= -1, f"runtime.max_restarts={rt.max_restarts} must be >= -1")
    _check(p, rt.torch_threads >= 1, f"runtime.torch_threads={rt.torch_threads} must be >= 1")
    _check(p, rt.vectorize_group >= 1,
           f"runtime.vectorize_group={rt.vectorize_group} must be >= 1 (participants "
           "trained together per vmapped group)")

    _check(p, cfg.checkpoint.every >= 1, f"checkpoint.every={cfg.checkpoint.every} must be >= 1")
    _check(p, cfg.checkpoint.keep_last >= 1,
           f"checkpoint.keep_last={cfg.checkpoint.keep_last} must be >= 1")
    _check(p, not (cfg.resume and not cfg.checkpoint.enabled),
           "resume=true needs checkpoint.enabled=true")
    bad_ids = [i for i in (*cfg.faults.raise_clients, *cfg.faults.slow_clients,
                           *cfg.faults.crash_clients) if not 0 <= i < fl.num_clients]
    _check(p, not bad_ids,
           f"faults: participant ids {bad_ids} are outside 0..fl.num_clients-1")
    from rayfed.compression.settings import compression_problems

    p.extend(compression_problems(cfg))
    from rayfed.privacy.settings import privacy_problems

    p.extend(privacy_problems(cfg))
    from rayfed.train.config import participant_problems

    p.extend(participant_problems(cfg))
    from rayfed.secure_agg.settings import secure_agg_problems

    p.extend(secure_agg_problems(cfg))
    from rayfed.adversary.settings import adversary_problems

    p.extend(adversary_problems(cfg))
    return p


def check(cfg: Config) -> Config:
    """Raise :class:`ConfigError` listing every problem, or return ``cfg``."""
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
