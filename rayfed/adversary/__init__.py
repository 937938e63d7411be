"""Malicious participants: Byzantine attacks and malformed updates (issue #9).

``attacks`` and ``malformed`` are pure functions over updates and labels;
:class:`Adversary` is the thin shell a participant host uses to apply the
configured one to the participants chosen as malicious.
"""

from rayfed.adversary.adversary import Adversary
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
    "Adversary",
    "alie",
    "alie_z_max",
    "boost",
    "flip_labels",
    "gaussian",
    "malicious_ids",
    "sign_flip",
]
