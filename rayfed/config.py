"""Typed configuration: the sections composed into one :class:`Config`, and its validator.

Each feature package owns its section (a dataclass in ``rayfed/<feature>/config.py``
with a pure ``*_problems(section)``); this module composes them into the schema
Hydra's ConfigStore holds, and keeps the one table of rules that combine
sections (:data:`RULES`). The YAML files in ``conf/`` hold values. A job converts
its ``DictConfig`` once with :func:`to_config`; :func:`validate` collects *every*
problem, naming each key, so that a user fixes a bad command line in one go. It
runs once per run, from :func:`rayfed.plan.resolve`, before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rayfed.adversary.config import AdversaryConfig, adversary_problems
from rayfed.compression.config import CompressionConfig, compression_problems
from rayfed.data.config import (
    DatasetConfig,
    PartitionConfig,
    dataset_problems,
    partition_problems,
)
from rayfed.errors import ConfigError
from rayfed.fl.config import (
    CheckpointConfig,
    FaultConfig,
    FLConfig,
    RuntimeConfig,
    checkpoint_problems,
    clients_per_round,
    fl_problems,
    runtime_problems,
)
from rayfed.models.config import ModelConfig, model_problems
from rayfed.privacy.config import AuditConfig, PrivacyConfig, audit_problems, privacy_problems
from rayfed.privacy.plan import participants_add_hidden_noise
from rayfed.schema import register, to_typed
from rayfed.secure_agg.config import SecureAggConfig, secure_agg_problems
from rayfed.strategies.config import StrategyConfig, strategy_problems
from rayfed.tracking.config import TrackingConfig
from rayfed.train.config import ParticipantConfig, participant_problems

__all__ = [
    "AdversaryConfig", "AuditConfig", "CheckpointConfig", "CompressionConfig", "Config",
    "DatasetConfig", "FLConfig", "FaultConfig", "ModelConfig", "ParticipantConfig",
    "PartitionConfig", "PrivacyConfig", "RuntimeConfig", "SecureAggConfig", "StrategyConfig",
    "TrackingConfig", "check", "clients_per_round", "config_hash", "open_dict_overrides",
    "register_configs", "to_config", "validate",
]


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
    register("base_config", Config)


def to_config(cfg: Any) -> Config:
    """Convert a composed Hydra ``DictConfig`` into the typed :class:`Config`."""
    return to_typed(cfg, Config, name="base_config", primary="your primary config")


def _dict_keys(obj: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the dict-valued fields under ``obj`` (a dataclass instance)."""
    from dataclasses import fields, is_dataclass

    out: list[str] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, dict):
            out.append(prefix + f.name)
        elif is_dataclass(value):
            out += _dict_keys(value, f"{prefix}{f.name}.")
    return out


def open_dict_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with those that set a dict field, or a key inside one, made ``++``.

    Hydra composes in struct mode, where a key that is not in the schema needs
    ``+`` to be added; a dict field (``model.kwargs``, ``dataset.categorical``,
    ``runtime.participant_resources``) has no fixed keys, so ``model.kwargs.width=256``
    would otherwise be refused. ``++`` adds or overrides, whichever applies.
    """
    keys = _dict_keys(Config())
    out = []
    for o in overrides:
        key = o.split("=", 1)[0]
        if "=" in o and key[:1] not in "+~" and any(
                key == k or key.startswith(k + ".") for k in keys):
            o = "++" + key + "=" + _QUOTED_KEY.sub(_escaped_key, o.split("=", 1)[1])
        out.append(o)
    return out


# Hydra 1.3's grammar has no quoted dict keys, and a bare brace in a key is an
# interpolation; a key such as 'site_{participant_id}' is written with escaped braces.
_QUOTED_KEY = re.compile(r"""(?<=[{,])\s*(['"])([^'"]*)\1\s*:""")


def _escaped_key(match: re.Match[str]) -> str:
    return match.group(2).replace("{", "\\{").replace("}", "\\}") + ":"


def config_hash(cfg: Config) -> str:
    """Hash of everything that determines the training trajectory.

    Runtime, tracking, checkpoint and output settings, ``resume`` and
    ``fl.rounds`` are left out: resuming on another cluster, or for more rounds,
    continues the same run (the plan then decides what more rounds mean).
    """
    d = asdict(cfg)
    for key in ("runtime", "tracking", "checkpoint", "output_dir", "resume", "faults",
                "audit", "name"):
        d.pop(key)
    d["fl"] = {k: v for k, v in d["fl"].items() if k != "rounds"}
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# -- the rules that combine sections ------------------------------------------
# Each section's own rules live with the section; these are the only ones that
# read two sections at once, each written here once.

def _krum_needs_participants(cfg: Config) -> list[str]:
    st, per_round = cfg.strategy, clients_per_round(cfg.fl)
    if st.reducer != "krum":
        return []
    p = []
    if per_round < 2 * st.num_byzantine + 3:
        p.append(f"strategy.num_byzantine={st.num_byzantine} needs at least "
                 f"2f+3={2 * st.num_byzantine + 3} participants per round for Krum, "
                 f"but a round selects {per_round}")
    if st.num_selected > per_round - st.num_byzantine:
        p.append(f"strategy.num_selected={st.num_selected} must be <= participants per "
                 "round minus strategy.num_byzantine")
    return p


def _resume_needs_checkpoints(cfg: Config) -> list[str]:
    if cfg.resume and not cfg.checkpoint.enabled:
        return ["resume=true needs checkpoint.enabled=true"]
    return []


def _fault_ids(cfg: Config) -> list[str]:
    f = cfg.faults
    bad = [i for i in (*f.raise_clients, *f.slow_clients, *f.crash_clients)
           if not 0 <= i < cfg.fl.num_clients]
    return [f"faults: participant ids {bad} are outside 0..fl.num_clients-1"] if bad else []


def _user_level_dp(cfg: Config) -> list[str]:
    pc = cfg.privacy
    if pc.name != "central_dp":
        return []
    p = []
    n = cfg.fl.num_clients
    if pc.delta is not None and not pc.delta < 1.0 / n:
        p.append(f"privacy.delta={pc.delta} must be < 1/fl.num_clients={1.0 / n:.3g} at user "
                 "level; set it lower or leave it null")
    if cfg.strategy.reducer != "weighted_mean":
        p.append(f"privacy=central_dp needs strategy.reducer=weighted_mean (DP-FedAvg bounds "
                 f"the sum of clipped updates), not {cfg.strategy.reducer!r}; use "
                 "strategy=fedavg, fedavgm, fedadam, fedyogi or fedadagrad")
    if cfg.compression.name != "none":
        # DP-FedAvg's noise is calibrated to ||update|| <= clipping_norm, and neither
        # codec keeps that bound: stochastic int8 can grow a clipped update by up to
        # sqrt(d)/127 of its norm, and error feedback sends residual mass from
        # earlier rounds on top of this round's clipped update.
        p.append(f"compression={cfg.compression.name!r} cannot be combined with "
                 "privacy=central_dp: the decoded update would no longer be bounded by "
                 "privacy.clipping_norm, so the noise would not cover it; use "
                 "privacy=local_dp (compression is then post-processing of a DP output) or "
                 "compression=none (docs/compression.md)")
    return p


def _participant_trainer(cfg: Config) -> list[str]:
    if cfg.participant.trainer != "ddp":
        return []
    p = []
    if cfg.privacy.name == "local_dp":
        p.append("participant.trainer=ddp with privacy=local_dp: per-participant DP-SGD "
                 "runs in the participant's own process; use participant.trainer=local, "
                 "or central_dp")
    if cfg.fl.optimizer != "sgd" or cfg.fl.momentum > 0:
        p.append("participant.trainer=ddp starts a fresh Ray Train job per round and carries "
                 "no local optimizer state between rounds; use fl.optimizer=sgd with "
                 "fl.momentum=0, or participant.trainer=local")
    return p


def _participant_device(cfg: Config) -> list[str]:
    pc, rt = cfg.participant, cfg.runtime
    p = []
    if pc.trainer == "local" and pc.device == "cuda" and rt.num_gpus_per_actor <= 0:
        p.append("participant.device=cuda needs runtime.num_gpus_per_actor > 0 (Ray gives an "
                 "actor no GPU otherwise), e.g. runtime.num_gpus_per_actor=0.25 to share one "
                 "GPU among four actors")
    if pc.trainer == "local" and pc.precision != "fp32" and cfg.privacy.name == "local_dp":
        p.append(f"participant.precision={pc.precision} with privacy=local_dp: DP-SGD's "
                 "per-sample gradients are computed in fp32; use participant.precision=fp32")
    return p


def _secure_aggregation(cfg: Config) -> list[str]:
    sa = cfg.secure_agg
    if sa.name == "none":
        return []
    p = []
    per_round = clients_per_round(cfg.fl)
    if cfg.fl.min_clients < sa.min_participants:
        p.append(f"fl.min_clients={cfg.fl.min_clients} must be >= secure_agg.min_participants="
                 f"{sa.min_participants}, so that a round with fewer survivors aborts instead "
                 "of asking the decryptor to open a too-small sum")
    if per_round < sa.min_participants:
        p.append(f"a round selects {per_round} participant(s), fewer than "
                 f"secure_agg.min_participants={sa.min_participants}; raise "
                 "fl.clients_per_round")
    if cfg.strategy.reducer != "weighted_mean":
        p.append(f"strategy.reducer={cfg.strategy.reducer!r} (strategy={cfg.strategy.name}) "
                 "cannot run with secure_agg=ckks: median, trimmed mean and Krum compare or "
                 "sort individual updates, and the aggregator only ever holds their "
                 "encrypted sum; use a weighted-mean strategy (fedavg, fedadam, fedyogi, ...)")
    if cfg.compression.name != "none":
        p.append(f"compression={cfg.compression.name!r} cannot be combined with "
                 "secure_agg=ckks: a CKKS ciphertext costs the same N/2 slots whatever the "
                 "values' precision (int8 saves nothing), and top-k picks different "
                 "coordinates per participant, which a slot-wise sum cannot add; set "
                 "compression=none (docs/security.md, 'Compression')")
    pc = cfg.privacy
    if (participants_add_hidden_noise(pc, secure_agg=True) and pc.secure_rng is False
            and not pc.allow_server_known_noise):
        p.append("privacy.secure_rng=false with secure_agg and noise added at the participants "
                 "lets the server regenerate every noise share from the round seeds it hands "
                 "out and subtract it; leave privacy.secure_rng unset (on) or set "
                 "privacy.allow_server_known_noise=true to accept that (reproducible tests "
                 "only)")
    if pc.name == "central_dp" and pc.noise_placement != "clients":
        p.append(f"privacy.noise_placement={pc.noise_placement!r} with secure_agg=ckks "
                 "would add the noise after decryption, so the sum would be released "
                 "without noise; set privacy.noise_placement=clients (clip and noise at each "
                 "participant, before encryption)")
    return p


def _adversary_plaintext(cfg: Config) -> list[str]:
    a = cfg.adversary
    if not a.active:
        return []
    # Attacks replace the plaintext update a participant reports; with a pipeline
    # stage in between they would have to be re-encoded (and under secure
    # aggregation the server could not look at them anyway).
    who = f"adversary={a.name!r}" if a.name != "none" else "adversary.malformed"
    return [f"{who} cannot be combined with {key}={value!r}: attacks act on plaintext, "
            f"unencoded updates; set {key}=none"
            for key, value in (("compression", cfg.compression.name),
                               ("privacy", cfg.privacy.name),
                               ("secure_agg", cfg.secure_agg.name)) if value != "none"]


RULES: tuple[Callable[[Config], list[str]], ...] = (
    lambda c: dataset_problems(c.dataset),
    lambda c: model_problems(c.model),
    lambda c: partition_problems(c.partition),
    lambda c: strategy_problems(c.strategy),
    lambda c: fl_problems(c.fl),
    lambda c: runtime_problems(c.runtime),
    lambda c: checkpoint_problems(c.checkpoint),
    lambda c: compression_problems(c.compression),
    lambda c: privacy_problems(c.privacy),
    lambda c: audit_problems(c.audit),
    lambda c: participant_problems(c.participant),
    lambda c: secure_agg_problems(c.secure_agg),
    lambda c: adversary_problems(c.adversary, num_clients=c.fl.num_clients),
    _krum_needs_participants,
    _resume_needs_checkpoints,
    _fault_ids,
    _user_level_dp,
    _participant_trainer,
    _participant_device,
    _secure_aggregation,
    _adversary_plaintext,
)


def validate(cfg: Config) -> list[str]:
    """Every problem in ``cfg``, each naming its key and how to fix it."""
    return [problem for rule in RULES for problem in rule(cfg)]


def check(cfg: Config) -> Config:
    """Raise :class:`ConfigError` listing every problem, or return ``cfg``."""
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
