"""Parameter checks shared by the reducers and the server optimizers."""

from __future__ import annotations

import math

import numpy as np

from rayfed.errors import AggregationError


def is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def raise_if(problems: list[str]) -> None:
    """Raise every collected problem at once."""
    if problems:
        raise AggregationError("; ".join(problems))
