"""Malicious participants: Byzantine attacks and malformed updates (issue #9).

``attacks`` and ``malformed`` are pure functions over updates and labels;
:class:`rayfed.adversary.adversary.Adversary` is the thin shell a participant
host uses to apply the configured one to the participants chosen as malicious.
It is not re-exported here: it imports torch and the data sets, and the config
layer, which imports this package for the attack names, must not (issue #18:
that import was a second of every job's start-up before its config was read).
"""

from rayfed.adversary.attacks import (
    ATTACKS,
    alie,
    alie_z_max,
    boost,
    flip_labels,
    gaussian,
    malicious_ids,
    sign_flip,
)
from rayfed.adversary.malformed import MALFORMED

__all__ = [
    "ATTACKS",
    "MALFORMED",
    "alie",
    "alie_z_max",
    "boost",
    "flip_labels",
    "gaussian",
    "malicious_ids",
    "sign_flip",
]
