"""A command line's keys against the schema: typos, and settings of features left off.

Hydra lets ``+fl.round=5`` append a key the schema does not have, and lets
``privacy.target_epsilon=3`` set a value that ``privacy=none`` then ignores; both
run to the end with exit code 0 and a result the user did not ask for. These
checks see only what the user typed (an experiment file's keys are not a typo),
and suggest the closest valid key by Levenshtein distance over the schema, which
is read from :class:`rayfed.config.Config`'s dataclass fields so that it follows
the sections wherever they are defined.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Groups whose settings do nothing unless the group selects a feature (name != none).
FEATURE_GROUPS = ("privacy", "compression", "secure_agg", "adversary")
# Keys of those groups that act with the feature off: the int8 export of the final
# model is independent of the update codec; malformed updates come on top of `name`.
ACTIVE_WHEN_OFF = frozenset({"compression.final_model", "compression.calibration_examples",
                             "compression.latency_batch_size", "adversary.malformed"})


@dataclasses.dataclass(frozen=True)
class Schema:
    """Every settable key of a config dataclass, and the prefixes of its free-form
    dict fields (``runtime.resources.edge`` is valid for any resource name)."""

    keys: frozenset[str]
    open_prefixes: frozenset[str]

    def knows(self, key: str) -> bool:
        return key in self.keys or any(key.startswith(f"{p}.") for p in self.open_prefixes)


def schema_of(config: Any) -> Schema:
    """Walk ``dataclasses.fields`` of ``config`` (a dataclass instance) recursively."""
    keys: set[str] = set()
    open_prefixes: set[str] = set()

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            key, value = f"{prefix}{f.name}", getattr(obj, f.name)
            keys.add(key)
            if dataclasses.is_dataclass(value):
                walk(value, f"{key}.")
            elif isinstance(value, Mapping):
                open_prefixes.add(key)

    walk(config, "")
    return Schema(frozenset(keys), frozenset(open_prefixes))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), O(len(a)·len(b))."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def closest(key: str, candidates: Iterable[str]) -> str:
    """The candidate nearest to ``key``; ties go to the shorter, then alphabetical."""
    return min(candidates, key=lambda c: (edit_distance(key, c), len(c), c))


def unknown_key_problem(override: str, key: str, schema: Schema,
                        groups: Sequence[str]) -> str | None:
    """A message for a key that is neither in the schema nor a config group."""
    if schema.knows(key) or key in groups:
        return None
    return (f"{override}: `{key}` is not a configuration key; did you mean "
            f"`{closest(key, [*schema.keys, *groups])}`? (docs/configuration.md lists "
            "every key)")


def _either(group: str, options: Sequence[str]) -> str:
    choices = [f"{group}={o}" for o in options]
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def feature_off_problem(override: str, key: str, selected: Mapping[str, str],
                        options: Mapping[str, Sequence[str]]) -> str | None:
    """A message for a setting of a feature group whose feature is off.

    ``selected``: each feature group's ``name`` in the composed config;
    ``options``: each group's choices (``conf/<group>/*.yaml``)."""
    group, _, rest = key.partition(".")
    if group not in FEATURE_GROUPS or not rest or rest == "name" or key in ACTIVE_WHEN_OFF:
        return None
    if selected.get(group, "none") != "none":
        return None
    on = [o for o in options.get(group, ()) if o != "none"]
    return (f"{override} requires {_either(group, on)}: {group} is none, so `{key}` "
            "would be ignored")
