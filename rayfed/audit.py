"""Empirical privacy audit of DP-FedAvg with canary participants.

Jagielski, Ullman & Oprea 2020, "Auditing Differentially Private Machine
Learning: How Private is Private SGD?", and Nasr et al. 2021, "Adversary
Instantiation: Lower Bounds for Differentially Private Machine Learning": run the
mechanism many times in two worlds, with and without a canary, let a
membership-inference test guess which world produced each output, and turn its
false-positive and false-negative rates, bounded with Clopper–Pearson intervals,
into a lower bound on ε that holds with the stated confidence:

    ε_lower = max( log((1 − δ − FNR⁺) / FPR⁺), log((1 − δ − FPR⁺) / FNR⁺) ).

If ε_lower exceeds the accountant's ε, the implementation (or its accounting) is
broken: the audit *flags* it.

What runs here is the release of DP-FedAvg itself, with the configured C, σ, q,
placement and rounds: the canary participant's update is clipped by the same
:func:`~rayfed.privacy.clipping.clip_update`, the other participants' clipped
updates are summed, and :func:`~rayfed.privacy.user_level.noisy_mean` adds the
noise and divides by the fixed denominator. The adversary is the strongest of
Nasr et al.: it knows every other update and sees every round's release (a Dirac
canary of norm C, the worst case for the Gaussian mechanism), so the audit is
close to tight. Local training is not part of it; ``noise_scale`` multiplies the
noise the mechanism adds *without* telling the accountant, which is how a test
builds the broken configuration (noise halved).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from rayfed.config import Config
from rayfed.errors import ConfigError
from rayfed.privacy.accounting import DpEvent, epsilon
from rayfed.privacy.clipping import clip_update
from rayfed.privacy.plan import UserLevelPlan
from rayfed.privacy.user_level import noisy_mean


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower: float
    epsilon_claimed: float
    delta: float
    confidence: float
    trials: int
    rounds: int
    threshold: float
    false_positive_rate: float
    false_negative_rate: float
    noise_scale: float

    @property
    def flagged(self) -> bool:
        """The empirical lower bound contradicts the accountant's claim."""
        return self.epsilon_lower > self.epsilon_claimed


def clopper_pearson_upper(k: int, n: int, *, confidence: float) -> float:
    """One-sided upper bound on a binomial rate (exact, via scipy's two-sided CI)."""
    ci = binomtest(k, n).proportion_ci(confidence_level=2 * confidence - 1, method="exact")
    return float(ci.high)


def epsilon_lower_bound(*, false_positives: int, false_negatives: int, n_out: int, n_in: int,
                        delta: float, confidence: float) -> float:
    """ε that a test with these error counts certifies at ``confidence`` (0 if none)."""
    fpr = clopper_pearson_upper(false_positives, n_out, confidence=confidence)
    fnr = clopper_pearson_upper(false_negatives, n_in, confidence=confidence)
    bounds = [0.0]
    for a, b in ((fnr, fpr), (fpr, fnr)):
        if 1 - delta - a > 0 and b > 0:
            bounds.append(math.log((1 - delta - a) / b))
    return max(bounds)


def canary_scores(plan: UserLevelPlan, *, trials: int, rounds: int, canary_in: bool,
                  rng: np.random.Generator, noise_scale: float = 1.0,
                  dim: int = 16) -> np.ndarray:
    """The adversary's score per trial: Σ over rounds of the release's component
    along the canary, after removing the (known) other participants."""
    c = plan.clipping_norm
    canary = clip_update(np.full(dim, 10.0 * c, dtype=np.float32), clipping_norm=c)
    direction = canary / np.linalg.norm(canary)
    others = [clip_update(rng.normal(0, 1, dim).astype(np.float32), clipping_norm=c)
              for _ in range(max(1, round(plan.expected_clients)) - 1)]
    known = np.sum(others, axis=0, dtype=np.float64) if others else np.zeros(dim)
    # Noise the mechanism actually adds on the sum: N(0, σ²C²), or the sum of the
    # participants' shares, which has the same law when none drop out.
    std = noise_scale * plan.noise_multiplier * c
    scores = np.zeros(trials)
    for _ in range(rounds):
        sampled = rng.random(trials) < plan.sample_rate if canary_in else np.zeros(trials, bool)
        total = np.broadcast_to(known, (trials, dim)) + np.outer(sampled, canary)
        release = noisy_mean(total, noise_std=std, expected_clients=plan.expected_clients,
                             rng=rng).astype(np.float64)
        scores += (release * plan.expected_clients - known) @ direction
    return scores


def audit(plan: UserLevelPlan, *, trials: int = 100_000, rounds: int = 1,
          noise_scale: float = 1.0, confidence: float = 0.95, seed: int = 0) -> AuditResult:
    """Audit ``rounds`` rounds of DP-FedAvg under ``plan`` with ``trials`` runs per world.

    Half of the runs choose the test's threshold, the other half measure it, so
    the Clopper–Pearson bounds are not biased by the choice.
    """
    rng = np.random.default_rng(seed)
    s_out = canary_scores(plan, trials=trials, rounds=rounds, canary_in=False, rng=rng,
                          noise_scale=noise_scale)
    s_in = canary_scores(plan, trials=trials, rounds=rounds, canary_in=True, rng=rng,
                         noise_scale=noise_scale)
    half = trials // 2

    def lower(t: float, out: np.ndarray, inn: np.ndarray) -> float:
        return epsilon_lower_bound(false_positives=int((out > t).sum()),
                                   false_negatives=int((inn <= t).sum()), n_out=len(out),
                                   n_in=len(inn), delta=plan.delta, confidence=confidence)

    candidates = np.quantile(s_out[:half], 1 - np.geomspace(1e-1, 5.0 / half, 40))
    best = max(candidates, key=lambda t: lower(t, s_out[:half], s_in[:half]))
    out, inn = s_out[half:], s_in[half:]
    claimed = epsilon([DpEvent(plan.sample_rate, plan.noise_multiplier, rounds)],
                      delta=plan.delta, accountant=plan.accountant)
    return AuditResult(
        epsilon_lower=lower(best, out, inn), epsilon_claimed=claimed, delta=plan.delta,
        confidence=confidence, trials=trials, rounds=rounds, threshold=float(best),
        false_positive_rate=float((out > best).mean()),
        false_negative_rate=float((inn <= best).mean()), noise_scale=noise_scale)


def audit_problems(cfg: Config) -> list[str]:
    """What the audit needs of a config beyond :func:`rayfed.config.validate`."""
    if cfg.privacy.name != "central_dp":
        return [f"the audit covers user-level DP; set privacy=central_dp (got "
                f"privacy={cfg.privacy.name})"]
    return []


def run_audit(cfg: Config) -> dict[str, Any]:
    """Body of ``jobs/privacy_audit.py``: audit the configured mechanism, write audit.json."""
    problems = audit_problems(cfg)
    if problems:
        raise ConfigError(problems)
    a = cfg.audit
    from rayfed.plan import resolve

    user = resolve(cfg).privacy.user
    if user is None:  # unreachable: central_dp always has a user-level plan
        raise ConfigError(["the audit needs privacy=central_dp"])
    result = audit(user, trials=a.trials, rounds=a.rounds or cfg.fl.rounds,
                   noise_scale=a.noise_scale, confidence=a.confidence, seed=cfg.seed)
    out = {**asdict(result), "flagged": result.flagged,
           "verdict": ("FLAGGED: the empirical lower bound exceeds the accountant's ε"
                       if result.flagged else "passed: no violation of the claimed ε found")}
    path = Path(cfg.output_dir) / "audit.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out
