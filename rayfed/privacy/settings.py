"""The privacy section of the config, checked and resolved into frozen plans.

:func:`privacy_problems` collects every problem with ``privacy.*`` (it is part of
:func:`rayfed.config.validate`); :func:`user_level_plan` resolves the settings of
DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent
Language Models"), solving σ for ``privacy.target_epsilon`` before training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rayfed.config import (
    ACCOUNTANTS,
    GRAD_SAMPLE_MODES,
    NOISE_PLACEMENTS,
    PRIVACY_MODES,
    Config,
    PrivacyConfig,
    clients_per_round,
)
from rayfed.errors import ConfigError
from rayfed.privacy.accounting import Accountant, solve_noise_multiplier

# δ when privacy.delta is null: below 1/n for n protected units (participants at
# user level, a shard's examples at record level), and never above 1e-5.
DEFAULT_DELTA = 1e-5


def default_delta(num_units: int) -> float:
    return min(DEFAULT_DELTA, 1.0 / (10.0 * max(num_units, 1)))


def privacy_problems(cfg: Config) -> list[str]:
    """Every problem with ``privacy.*``, each naming its key and a fix."""
    pc = cfg.privacy
    p: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    for key, value, options in (("privacy", pc.name, PRIVACY_MODES),
                                ("privacy.accountant", pc.accountant, ACCOUNTANTS),
                                ("privacy.noise_placement", pc.noise_placement, NOISE_PLACEMENTS),
                                ("privacy.grad_sample_mode", pc.grad_sample_mode,
                                 GRAD_SAMPLE_MODES)):
        check(value in options, f"{key}={value!r} is not one of {sorted(options)}; pick one "
                                "of those")
    a = cfg.audit
    check(a.trials >= 1000, f"audit.trials={a.trials} must be >= 1000 (e.g. 200000): the "
                            "Clopper–Pearson bounds need many runs")
    check(a.rounds is None or a.rounds >= 1, f"audit.rounds={a.rounds} must be >= 1 or null")
    check(a.noise_scale > 0, f"audit.noise_scale={a.noise_scale} must be > 0 (1 = as configured)")
    check(0.5 < a.confidence < 1, f"audit.confidence={a.confidence} must be in (0.5, 1), "
                                  "e.g. 0.95")
    if pc.name == "none":
        return p
    check(pc.target_epsilon is not None or pc.noise_multiplier is not None,
          f"privacy={pc.name} needs privacy.target_epsilon (e.g. 8) or "
          "privacy.noise_multiplier (e.g. 1.0); set at least one")
    check(pc.target_epsilon is None or pc.target_epsilon > 0,
          f"privacy.target_epsilon={pc.target_epsilon} must be > 0, e.g. 8")
    check(pc.noise_multiplier is None or pc.noise_multiplier > 0,
          f"privacy.noise_multiplier={pc.noise_multiplier} must be > 0, e.g. 1.0")
    check(pc.clipping_norm > 0, f"privacy.clipping_norm={pc.clipping_norm} must be > 0, "
                                "e.g. 1.0")
    check(pc.delta is None or 0 < pc.delta < 1,
          f"privacy.delta={pc.delta} must be in (0, 1), e.g. 1e-5, or null for the default")
    if pc.name == "central_dp":
        n = cfg.fl.num_clients
        check(pc.delta is None or pc.delta < 1.0 / n,
              f"privacy.delta={pc.delta} must be < 1/fl.num_clients={1.0 / n:.3g} at user "
              "level; set it lower or leave it null")
        check(cfg.strategy.reducer == "weighted_mean",
              f"privacy=central_dp needs strategy.reducer=weighted_mean (DP-FedAvg bounds the "
              f"sum of clipped updates), not {cfg.strategy.reducer!r}; use strategy=fedavg, "
              "fedavgm, fedadam, fedyogi or fedadagrad")
    check(not (participants_noise_under_secure_agg(cfg) and pc.secure_rng is False
               and not pc.allow_server_known_noise),
          "privacy.secure_rng=false with secure_agg and noise added at the participants "
          "lets the server regenerate every noise share from the round seeds it hands out "
          "and subtract it; leave privacy.secure_rng unset (on) or set "
          "privacy.allow_server_known_noise=true to accept that (reproducible tests only)")
    if pc.name == "local_dp":
        check(pc.noise_placement == "server",
              "privacy.noise_placement applies to central_dp only; local_dp always adds its "
              "noise at the participants (leave privacy.noise_placement=server)")
    return p


def participants_noise_under_secure_agg(cfg: Config) -> bool:
    """Participants add DP noise to updates that secure aggregation hides."""
    pc = cfg.privacy
    return cfg.secure_agg.name != "none" and (
        pc.name == "local_dp" or (pc.name == "central_dp" and pc.noise_placement == "clients"))


def resolved_secure_rng(cfg: Config) -> bool:
    """``privacy.secure_rng``, or its default: on exactly where participants add
    noise under secure aggregation (the server hands out every round seed)."""
    if cfg.privacy.secure_rng is not None:
        return bool(cfg.privacy.secure_rng)
    return participants_noise_under_secure_agg(cfg)


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
    noise_placement: str
    secure_rng: bool


def user_level_plan(cfg: Config) -> UserLevelPlan:
    """σ given, or solved so that ``fl.rounds`` rounds spend at most the target."""
    pc: PrivacyConfig = cfg.privacy
    if pc.name != "central_dp":
        raise ConfigError([f"user_level_plan needs privacy=central_dp, not {pc.name!r}"])
    n = cfg.fl.num_clients
    q = clients_per_round(cfg.fl) / n
    delta = pc.delta if pc.delta is not None else default_delta(n)
    sigma = pc.noise_multiplier
    if sigma is None:
        sigma = _solve(pc, delta=delta, sample_rate=q, steps=cfg.fl.rounds,
                       what=f"fl.rounds={cfg.fl.rounds} rounds at q={q:.3g}")
    return UserLevelPlan(noise_multiplier=sigma, clipping_norm=pc.clipping_norm, delta=delta,
                         sample_rate=q, expected_clients=q * n, num_clients=n,
                         target_epsilon=pc.target_epsilon,
                         accountant=pc.accountant,  # type: ignore[arg-type]
                         noise_placement=pc.noise_placement,
                         secure_rng=resolved_secure_rng(cfg))


def _solve(pc: PrivacyConfig, *, delta: float, sample_rate: float, steps: int,
           what: str) -> float:
    target = pc.target_epsilon
    if target is None:
        raise ConfigError(["set privacy.target_epsilon or privacy.noise_multiplier"])
    try:
        return solve_noise_multiplier(target_epsilon=target, delta=delta,
                                      sample_rate=sample_rate, steps=steps,
                                      accountant=pc.accountant)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError([f"privacy.target_epsilon={target} cannot be met for {what} "
                           f"at δ={delta:g} ({exc}); raise the target, or plan fewer rounds or "
                           "a lower sample rate"]) from exc


def record_steps(*, num_examples: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """(q, steps per round) of Poisson-sampled DP-SGD on one participant's shard."""
    q = min(1.0, batch_size / max(num_examples, 1))
    return q, local_epochs * max(1, math.ceil(1.0 / q - 1e-9))
