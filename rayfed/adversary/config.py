"""The ``adversary`` section of the config (Byzantine participants), and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from rayfed.adversary.attacks import ATTACKS
from rayfed.adversary.malformed import MALFORMED


@dataclass
class AdversaryConfig:
    """Byzantine participants for robustness experiments (``conf/adversary/``);
    attacks in ``rayfed.adversary``."""

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

    @property
    def active(self) -> bool:
        return self.name != "none" or bool(self.malformed)


def adversary_problems(a: AdversaryConfig, *, num_clients: int) -> list[str]:
    """Every problem with the ``adversary`` section, given the number of participants."""
    n = num_clients
    p: list[str] = []
    names = sorted({*ATTACKS, *MALFORMED})
    if a.name not in names:
        p.append(f"adversary={a.name!r} is not one of {names}; pick one of those "
                 "(files in conf/adversary/ or adversary.name=<malformed mode>)")
    if not 0 <= a.fraction < 1:
        p.append(f"adversary.fraction={a.fraction} must be in [0, 1), e.g. 0.2")
    bad = [i for i in a.clients if not 0 <= i < n]
    if bad:
        p.append(f"adversary.clients: participant ids {bad} are outside 0..fl.num_clients-1")
    if not a.scale > 0:
        p.append(f"adversary.scale={a.scale} must be > 0")
    if a.z_max is not None and not a.z_max >= 0:
        p.append(f"adversary.z_max={a.z_max} must be >= 0 or null (the paper's value)")
    bad_modes = sorted({m for m in a.malformed.values() if m not in MALFORMED})
    if bad_modes:
        p.append(f"adversary.malformed: modes {bad_modes} are not in {sorted(MALFORMED)}")
    bad_ids = sorted(i for i in a.malformed if not 0 <= i < n)
    if bad_ids:
        p.append(f"adversary.malformed: participant ids {bad_ids} are outside "
                 "0..fl.num_clients-1")
    if a.name != "none" and not a.clients and round(a.fraction * n) == 0:
        p.append(f"adversary={a.name!r} with adversary.fraction={a.fraction} makes no "
                 f"participant of fl.num_clients={n} malicious; raise adversary.fraction or "
                 "list adversary.clients")
    return p
