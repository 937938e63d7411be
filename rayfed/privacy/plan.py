"""A privacy section resolved into a frozen plan, once, in the driver.

:func:`privacy_plan` turns ``privacy.*`` plus the run's shape (participants,
rounds) into a :class:`PrivacyPlan`: for DP-FedAvg (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models") the σ solved for
``privacy.target_epsilon`` before training, q, δ, C and where the noise is
added; for record-level DP-SGD (Abadi et al. 2016) the settings from which each
participant solves its own σ for its shard size. Every process receives the plan
and never re-derives it from the config.

:func:`replan_user_level` handles a resumed run that plans a different number
of rounds: σ is solved again for the remaining rounds *given the ledger already
spent*, so that the noise the participants add and the ε the ledger charges
stay one and the same number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from rayfed.errors import ConfigError
from rayfed.privacy.accounting import Accountant, DpEvent, epsilon, solve_noise_multiplier
from rayfed.privacy.config import NoisePlacement, PrivacyConfig, PrivacyMode
from rayfed.privacy.noise import client_noise_std

# δ when privacy.delta is null: below 1/n for n protected units (participants at
# user level, a shard's examples at record level), and never above 1e-5.
DEFAULT_DELTA = 1e-5


def default_delta(num_units: int) -> float:
    return min(DEFAULT_DELTA, 1.0 / (10.0 * max(num_units, 1)))


@dataclass(frozen=True)
class UserLevelPlan:
    """Resolved DP-FedAvg settings: what each round spends and how."""

    noise_multiplier: float
    clipping_norm: float
    delta: float
    # q: each participant joins a round independently with this probability.
    sample_rate: float
    # The fixed denominator of DP-FedAvg: q · num_clients, not the random count.
    expected_clients: float
    num_clients: int
    target_epsilon: float | None
    accountant: Accountant
    noise_placement: NoisePlacement
    secure_rng: bool
    # Rounds σ was solved for (None: σ was given, not solved).
    solved_for_rounds: int | None = None

    @property
    def client_noise_std(self) -> float:
        """Each participant's share of the noise under ``noise_placement=clients``:
        N(0, σ²C²/m) each, so that m of them sum to N(0, σ²C²)."""
        if self.noise_placement != "clients":
            return 0.0
        return client_noise_std(noise_multiplier=self.noise_multiplier,
                                clipping_norm=self.clipping_norm,
                                expected_clients=self.expected_clients)

    @property
    def server_noise_std(self) -> float:
        return (self.noise_multiplier * self.clipping_norm
                if self.noise_placement == "server" else 0.0)


@dataclass(frozen=True)
class RecordLevelSettings:
    """Record-level DP-SGD: each participant solves σ for its own shard from these."""

    target_epsilon: float | None
    noise_multiplier: float | None
    clipping_norm: float
    delta: float | None
    accountant: Accountant
    secure_rng: bool
    grad_sample_mode: str
    batch_size: int
    local_epochs: int
    rounds: int


@dataclass(frozen=True)
class PrivacyPlan:
    mode: PrivacyMode = "none"
    user: UserLevelPlan | None = None
    record: RecordLevelSettings | None = None

    @property
    def unit_weights(self) -> bool:
        """DP-FedAvg sums clipped updates with weight 1 (its sensitivity is C)."""
        return self.user is not None


def participants_add_hidden_noise(pc: PrivacyConfig, *, secure_agg: bool) -> bool:
    """Participants add DP noise to updates that secure aggregation hides."""
    return secure_agg and (pc.name == "local_dp" or (pc.name == "central_dp"
                                                     and pc.noise_placement == "clients"))


def resolved_secure_rng(pc: PrivacyConfig, *, secure_agg: bool) -> bool:
    """``privacy.secure_rng``, or its default: on exactly where participants add
    noise under secure aggregation (the server hands out every round's seed, so
    it could regenerate seeded noise and subtract it)."""
    if pc.secure_rng is not None:
        return bool(pc.secure_rng)
    return participants_add_hidden_noise(pc, secure_agg=secure_agg)


def privacy_plan(pc: PrivacyConfig, *, num_clients: int, per_round: int, rounds: int,
                 batch_size: int, local_epochs: int, secure_agg: bool = False) -> PrivacyPlan:
    """The plan of a checked ``privacy`` section; σ is solved here and nowhere else."""
    secure_rng = resolved_secure_rng(pc, secure_agg=secure_agg)
    if pc.name == "central_dp":
        return PrivacyPlan("central_dp", user=user_level_plan(
            pc, num_clients=num_clients, per_round=per_round, rounds=rounds,
            secure_rng=secure_rng))
    if pc.name == "local_dp":
        return PrivacyPlan("local_dp", record=RecordLevelSettings(
            target_epsilon=pc.target_epsilon, noise_multiplier=pc.noise_multiplier,
            clipping_norm=pc.clipping_norm, delta=pc.delta,
            accountant=pc.accountant,  # type: ignore[arg-type]
            secure_rng=secure_rng, grad_sample_mode=pc.grad_sample_mode,
            batch_size=batch_size, local_epochs=local_epochs, rounds=rounds))
    return PrivacyPlan()


def user_level_plan(pc: PrivacyConfig, *, num_clients: int, per_round: int,
                    rounds: int, secure_rng: bool | None = None) -> UserLevelPlan:
    """σ given, or solved so that ``rounds`` rounds spend at most the target."""
    q = per_round / num_clients
    delta = pc.delta if pc.delta is not None else default_delta(num_clients)
    sigma, solved = pc.noise_multiplier, None
    if sigma is None:
        sigma = _solve(pc.target_epsilon, pc.accountant, delta=delta,  # type: ignore[arg-type]
                       sample_rate=q, steps=rounds,
                       what=f"fl.rounds={rounds} rounds at q={q:.3g}")
        solved = rounds
    return UserLevelPlan(noise_multiplier=sigma, clipping_norm=pc.clipping_norm, delta=delta,
                         sample_rate=q, expected_clients=q * num_clients,
                         num_clients=num_clients, target_epsilon=pc.target_epsilon,
                         accountant=pc.accountant,  # type: ignore[arg-type]
                         noise_placement=pc.noise_placement,  # type: ignore[arg-type]
                         secure_rng=bool(pc.secure_rng) if secure_rng is None else secure_rng,
                         solved_for_rounds=solved)


def _solve(target: float | None, accountant: Accountant, *, delta: float, sample_rate: float,
           steps: int, what: str) -> float:
    if target is None:
        raise ConfigError(["set privacy.target_epsilon or privacy.noise_multiplier"])
    try:
        return solve_noise_multiplier(target_epsilon=target, delta=delta,
                                      sample_rate=sample_rate, steps=steps,
                                      accountant=accountant)
    except ValueError as exc:
        raise ConfigError([f"privacy.target_epsilon={target} cannot be met for {what} "
                           f"at δ={delta:g} ({exc}); raise the target, or plan fewer rounds or "
                           "a lower sample rate"]) from exc


def replan_user_level(plan: UserLevelPlan, *, spent: list[DpEvent], rounds_done: int,
                      rounds: int) -> UserLevelPlan:
    """The plan for a resumed run that now plans ``rounds`` rounds in all.

    A σ that was given stays. A σ solved for another number of rounds is solved
    again for the ``rounds - rounds_done`` rounds left, on top of the events
    already spent, so that the whole run still meets the target; the new σ is
    what participants add and what the ledger charges from here on.
    """
    if plan.solved_for_rounds is None or plan.solved_for_rounds == rounds:
        return plan
    target = plan.target_epsilon
    remaining = rounds - rounds_done
    if target is None or remaining <= 0:
        return replace(plan, solved_for_rounds=rounds)

    def eps(sigma: float) -> float:
        return epsilon([*spent, DpEvent(plan.sample_rate, sigma, remaining)],
                       delta=plan.delta, accountant=plan.accountant)

    if epsilon(spent, delta=plan.delta, accountant=plan.accountant) >= target:
        raise ConfigError([f"fl.rounds={rounds}: the {rounds_done} rounds already run spent "
                           f"privacy.target_epsilon={target}; no round is left to plan. Keep "
                           f"fl.rounds={rounds_done}, or start a fresh run"])
    lo, hi = 1e-3, max(plan.noise_multiplier, 1.0)
    while eps(hi) > target:
        hi *= 2
        if hi > 1e6:
            raise ConfigError([f"fl.rounds={rounds}: no noise multiplier lets the remaining "
                               f"{remaining} rounds fit privacy.target_epsilon={target}"])
    for _ in range(60):  # bisection to ~1e-12 relative: ε(σ) decreases in σ
        mid = (lo + hi) / 2
        if eps(mid) > target:
            lo = mid
        else:
            hi = mid
    return replace(plan, noise_multiplier=hi, solved_for_rounds=rounds)


@dataclass(frozen=True)
class RecordLevelPlan:
    """One participant's DP-SGD: σ solved for its own shard, for every planned round."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    sample_rate: float
    steps_per_round: int
    target_epsilon: float | None
    accountant: Accountant


@lru_cache(maxsize=256)
def record_level_plan(settings: RecordLevelSettings, num_examples: int) -> RecordLevelPlan:
    """The plan of a participant with ``num_examples`` training examples.

    The same pure function in the participant's host and at the server, which
    keeps its own copy of every participant's ledger (``rayfed.privacy.server``).
    """
    st = settings
    q, steps = record_steps(num_examples=num_examples, batch_size=st.batch_size,
                            local_epochs=st.local_epochs)
    delta = st.delta if st.delta is not None else default_delta(num_examples)
    sigma = st.noise_multiplier
    if sigma is None:
        sigma = solve_noise_multiplier(target_epsilon=st.target_epsilon or 0.0, delta=delta,
                                       sample_rate=q, steps=steps * st.rounds,
                                       accountant=st.accountant)
    return RecordLevelPlan(sigma, st.clipping_norm, delta, q, steps, st.target_epsilon,
                           st.accountant)


def shard_problems(plan: PrivacyPlan, shard_sizes: dict[int, int]) -> list[str]:
    """Checks that need the participants' shard sizes (known once hosts built them).

    At record level δ must stay below 1/n for every shard of n records: a δ of
    1/n or more allows a mechanism that publishes one record outright.
    """
    record = plan.record
    if record is None or record.delta is None or not shard_sizes:
        return []
    pid, largest = max(shard_sizes.items(), key=lambda kv: kv[1])
    if record.delta < 1.0 / largest:
        return []
    return [f"privacy.delta={record.delta} must be below 1/(largest shard) = 1/{largest} = "
            f"{1.0 / largest:.3g} at record level (participant {pid} holds {largest} "
            "records); set it lower, e.g. 1e-5, or leave it null for a safe default"]


def record_steps(*, num_examples: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """(q, steps per round) of Poisson-sampled DP-SGD on one participant's shard."""
    q = min(1.0, batch_size / max(num_examples, 1))
    return q, local_epochs * max(1, math.ceil(1.0 / q - 1e-9))
