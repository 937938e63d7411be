"""The few exceptions rayfed raises.

A lost participant or a late update is a *value* (see ``rayfed.types``), never an
exception. Exceptions are for things a user must fix: a bad config, impossible
data parameters, a corrupt checkpoint, a spent privacy budget.
"""

from __future__ import annotations


class RayfedError(Exception):
    """Base class of every rayfed error."""


class ConfigError(RayfedError, ValueError):
    """One or more invalid settings. ``problems`` names every bad key at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class DataError(RayfedError, ValueError):
    """Impossible data or partition parameters (e.g. ``alpha <= 0``)."""


class CheckpointError(RayfedError):
    """A checkpoint is missing, corrupt, or belongs to a different config."""


class AggregationError(RayfedError, ValueError):
    """An aggregation rule cannot run on the given updates (e.g. Krum with n < 2f+3)."""


class SecureAggError(RayfedError):
    """A secure-aggregation rule was broken: a role holding a key it must not hold,
    or a decryption request for anything but the current round's committed sum."""


class IntegrityError(SecureAggError, ValueError):
    """A ciphertext made under another key, or for another round, rejected before
    it is summed (TenSEAL alone would decrypt it to garbage)."""


class ClusterUnreachableError(RayfedError, ConnectionError):
    """The Ray cluster a job was told to join is not there; the message names the
    config key and how to start one."""
