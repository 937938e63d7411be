"""The round loop's sections of the config: ``fl``, ``runtime``, ``checkpoint``, ``faults``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PLACEMENTS = ("pooled", "dedicated")
LOCAL_OPTIMIZERS = ("sgd", "adam")


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
    # dedicated: resources per participant, {participant_id} filled in, e.g.
    # "runtime.participant_resources={'site_{participant_id}': 1}": participant i
    # runs on the node advertising site_i (where its files are). Never dropped.
    participant_resources: dict[str, float] = field(default_factory=dict)
    # GPUs per actor; fractional lets pooled actors share one GPU (participant.device).
    num_gpus_per_actor: float = 0.0
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
class CheckpointConfig:
    enabled: bool = True
    dir: str = "checkpoints"
    every: int = 1
    keep_last: int = 2
    # The HMAC key that authenticates checkpoints, kept outside checkpoint.dir;
    # null = $RAYFED_CHECKPOINT_KEY_FILE or ~/.config/rayfed/checkpoint.key (made 0600).
    key_file: str | None = None


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


def clients_per_round(fl: FLConfig) -> int:
    """How many participants a round selects."""
    if fl.clients_per_round is not None:
        return fl.clients_per_round
    fraction = fl.client_fraction if fl.client_fraction is not None else 1.0
    return max(1, math.ceil(fraction * fl.num_clients))


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def fl_problems(fl: FLConfig) -> list[str]:
    p: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    check(fl.num_clients >= 1, f"fl.num_clients={fl.num_clients} must be >= 1")
    if fl.clients_per_round is not None:
        check(1 <= fl.clients_per_round <= max(fl.num_clients, 1),
              f"fl.clients_per_round={fl.clients_per_round} must be between 1 and "
              f"fl.num_clients={fl.num_clients}")
    if fl.client_fraction is not None:
        check(_finite(fl.client_fraction) and 0 < fl.client_fraction <= 1,
              f"fl.client_fraction={fl.client_fraction} must be in (0, 1]")
    check(fl.clients_per_round is None or fl.client_fraction is None,
          "set only one of fl.clients_per_round and fl.client_fraction "
          "(set the other to null)")
    per_round = clients_per_round(fl)
    check(1 <= fl.min_clients <= per_round,
          f"fl.min_clients={fl.min_clients} (the quorum) must be between 1 and the "
          f"participants selected per round ({per_round})")
    check(fl.rounds >= 1, f"fl.rounds={fl.rounds} must be >= 1")
    check(fl.local_epochs >= 1, f"fl.local_epochs={fl.local_epochs} must be >= 1")
    check(fl.batch_size >= 1, f"fl.batch_size={fl.batch_size} must be >= 1")
    check(_finite(fl.lr) and fl.lr > 0, f"fl.lr={fl.lr} must be a finite number > 0")
    check(fl.optimizer in LOCAL_OPTIMIZERS,
          f"fl.optimizer={fl.optimizer!r} is not one of {sorted(LOCAL_OPTIMIZERS)}; pick one "
          "of those")
    check(_finite(fl.momentum) and 0 <= fl.momentum < 1,
          f"fl.momentum={fl.momentum} must be in [0, 1)")
    check(_finite(fl.weight_decay) and fl.weight_decay >= 0,
          f"fl.weight_decay={fl.weight_decay} must be >= 0")
    check(_finite(fl.round_timeout_s) and fl.round_timeout_s > 0,
          f"fl.round_timeout_s={fl.round_timeout_s} must be a finite number > 0 seconds")
    check(fl.eval_every >= 0, f"fl.eval_every={fl.eval_every} must be >= 0 (0 = end only)")
    check(fl.federated_eval_every >= 0,
          f"fl.federated_eval_every={fl.federated_eval_every} must be >= 0")
    return p


def runtime_problems(rt: RuntimeConfig) -> list[str]:
    p: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    check(rt.placement in PLACEMENTS,
          f"runtime.placement={rt.placement!r} is not one of {sorted(PLACEMENTS)}; pick one "
          "of those")
    check(rt.num_cpus is None or rt.num_cpus >= 1,
          f"runtime.num_cpus={rt.num_cpus} must be >= 1 or null")
    check(rt.pool_size is None or rt.pool_size >= 1,
          f"runtime.pool_size={rt.pool_size} must be >= 1 or null")
    check(rt.actor_num_cpus is None or (_finite(rt.actor_num_cpus) and rt.actor_num_cpus > 0),
          f"runtime.actor_num_cpus={rt.actor_num_cpus} must be > 0 or null")
    check(rt.max_restarts >= -1, f"runtime.max_restarts={rt.max_restarts} must be >= -1")
    check(rt.torch_threads >= 1, f"runtime.torch_threads={rt.torch_threads} must be >= 1")
    p += participant_resource_problems(rt)
    check(_finite(rt.num_gpus_per_actor) and rt.num_gpus_per_actor >= 0,
          f"runtime.num_gpus_per_actor={rt.num_gpus_per_actor} must be >= 0 (fractions share "
          "a GPU between actors)")
    check(rt.vectorize_group >= 1,
          f"runtime.vectorize_group={rt.vectorize_group} must be >= 1 (participants "
          "trained together per vmapped group)")
    return p


def participant_resources(rt: RuntimeConfig, participant_id: int) -> dict[str, float]:
    """``runtime.participant_resources`` for one participant, its id filled in."""
    return {k.format(participant_id=participant_id): float(v)
            for k, v in rt.participant_resources.items()}


def participant_resource_problems(rt: RuntimeConfig) -> list[str]:
    import string

    if not rt.participant_resources:
        return []
    p = []
    if rt.placement != "dedicated":
        p.append("runtime.participant_resources places one actor per participant; set "
                 "runtime.placement=dedicated (pooled actors serve many participants)")
    for key, amount in rt.participant_resources.items():
        try:
            names = [n for _, n, _, _ in string.Formatter().parse(key) if n is not None]
        except ValueError as exc:
            names = [str(exc)]
        if names != ["participant_id"]:
            p.append(f"runtime.participant_resources key {key!r} must contain "
                     "{participant_id} once and no other placeholder, e.g. "
                     "\"runtime.participant_resources={'site_{participant_id}': 1}\"")
        if not (_finite(amount) and amount > 0):
            p.append(f"runtime.participant_resources[{key!r}]={amount} must be > 0")
    return p


def checkpoint_problems(ck: CheckpointConfig) -> list[str]:
    p: list[str] = []
    if ck.every < 1:
        p.append(f"checkpoint.every={ck.every} must be >= 1")
    if ck.keep_last < 1:
        p.append(f"checkpoint.keep_last={ck.keep_last} must be >= 1")
    return p
