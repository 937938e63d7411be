"""The ``privacy`` and ``audit`` sections of the config, and their checks.

``local_dp``: record-level DP-SGD at each participant (Abadi et al. 2016);
``central_dp``: user-level DP-FedAvg (McMahan et al. 2018). What a section
resolves to (σ, q, δ, noise placement) is :mod:`rayfed.privacy.plan`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

PrivacyMode = Literal["none", "local_dp", "central_dp"]
NoisePlacement = Literal["server", "clients"]
PRIVACY_MODES: tuple[PrivacyMode, ...] = ("none", "local_dp", "central_dp")
ACCOUNTANTS = ("rdp", "prv")
NOISE_PLACEMENTS: tuple[NoisePlacement, ...] = ("server", "clients")
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
    # needs allow_server_known_noise=true.
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


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def privacy_problems(pc: PrivacyConfig) -> list[str]:
    """Every problem with the ``privacy`` section on its own, each naming its key."""
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
    if pc.name == "none":
        return p
    check(pc.target_epsilon is not None or pc.noise_multiplier is not None,
          f"privacy={pc.name} needs privacy.target_epsilon (e.g. 8) or "
          "privacy.noise_multiplier (e.g. 1.0); set at least one")
    check(pc.target_epsilon is None or (_finite(pc.target_epsilon) and pc.target_epsilon > 0),
          f"privacy.target_epsilon={pc.target_epsilon} must be a finite number > 0, e.g. 8")
    check(pc.noise_multiplier is None
          or (_finite(pc.noise_multiplier) and pc.noise_multiplier > 0),
          f"privacy.noise_multiplier={pc.noise_multiplier} must be a finite number > 0, e.g. 1.0")
    check(_finite(pc.clipping_norm) and pc.clipping_norm > 0,
          f"privacy.clipping_norm={pc.clipping_norm} must be a finite number > 0, e.g. 1.0")
    check(pc.delta is None or (_finite(pc.delta) and 0 < pc.delta < 1),
          f"privacy.delta={pc.delta} must be in (0, 1), e.g. 1e-5, or null for the default")
    if pc.name == "local_dp":
        check(pc.noise_placement == "server",
              "privacy.noise_placement applies to central_dp only; local_dp always adds its "
              "noise at the participants (leave privacy.noise_placement=server)")
    return p


def audit_problems(a: AuditConfig) -> list[str]:
    p: list[str] = []
    if a.trials < 1000:
        p.append(f"audit.trials={a.trials} must be >= 1000 (e.g. 200000): the "
                 "Clopper–Pearson bounds need many runs")
    if a.rounds is not None and a.rounds < 1:
        p.append(f"audit.rounds={a.rounds} must be >= 1 or null")
    if not (_finite(a.noise_scale) and a.noise_scale > 0):
        p.append(f"audit.noise_scale={a.noise_scale} must be > 0 (1 = as configured)")
    if not (_finite(a.confidence) and 0.5 < a.confidence < 1):
        p.append(f"audit.confidence={a.confidence} must be in (0.5, 1), e.g. 0.95")
    return p
