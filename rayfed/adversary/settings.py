"""Checks of the ``adversary`` section and of what it may be combined with.

:func:`rayfed.config.validate` calls :func:`adversary_problems`; each message
names its key and the fix.
"""

from __future__ import annotations

from rayfed.adversary.attacks import ATTACKS
from rayfed.adversary.malformed import MALFORMED
from rayfed.config import Config


def adversary_problems(cfg: Config) -> list[str]:
    """Every problem with ``cfg.adversary`` and its combination with other sections."""
    a = cfg.adversary
    n = cfg.fl.num_clients
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
    if a.scale <= 0:
        p.append(f"adversary.scale={a.scale} must be > 0")
    if a.z_max is not None and a.z_max < 0:
        p.append(f"adversary.z_max={a.z_max} must be >= 0 or null (the paper's value)")
    bad_modes = sorted({m for m in a.malformed.values() if m not in MALFORMED})
    if bad_modes:
        p.append(f"adversary.malformed: modes {bad_modes} are not in {sorted(MALFORMED)}")
    bad_ids = sorted(i for i in a.malformed if not 0 <= i < n)
    if bad_ids:
        p.append(f"adversary.malformed: participant ids {bad_ids} are outside "
                 "0..fl.num_clients-1")
    if a.name == "none" and not a.malformed:
        return p
    if a.name != "none" and not a.clients and round(a.fraction * n) == 0:
        p.append(f"adversary={a.name!r} with adversary.fraction={a.fraction} makes no "
                 f"participant of fl.num_clients={n} malicious; raise adversary.fraction or "
                 "list adversary.clients")
    # Attacks replace the plaintext update a participant reports; with a pipeline
    # stage in between they would have to be re-encoded (and under secure
    # aggregation the server could not look at them anyway).
    for key, value in (("compression", cfg.compression.name), ("privacy", cfg.privacy.name),
                       ("secure_agg", cfg.secure_agg.name)):
        if value != "none":
            who = f"adversary={a.name!r}" if a.name != "none" else "adversary.malformed"
            p.append(f"{who} cannot be combined with {key}={value!r}: attacks act on "
                     f"plaintext, unencoded updates; set {key}=none")
    return p
