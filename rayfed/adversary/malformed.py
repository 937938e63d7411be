"""Malformed updates: what a buggy or hostile participant may send instead of a
well-formed one, for testing the server's screening (issue #9, I2).

Each mode is a pure function of an honest :class:`~rayfed.types.FitRes`. Updates
travel as one flat float32 vector, so a "missing" or "extra" tensor shows up as a
vector that is too short or too long, a wrong shape as a 2-D array, and a wrong
dtype as float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from rayfed.types import FitRes


def _with_delta(res: FitRes, delta: np.ndarray) -> FitRes:
    return replace(res, delta=delta)


def _poke(value: float) -> Callable[[FitRes], FitRes]:
    def f(res: FitRes) -> FitRes:
        d = np.array(res.delta, dtype=np.float32, copy=True)
        d[d.size // 2] = value
        return _with_delta(res, d)
    return f


MALFORMED: Mapping[str, Callable[[FitRes], FitRes]] = MappingProxyType({
    "nan": _poke(float("nan")),
    "inf": _poke(float("inf")),
    # The last parameter tensor (the output bias) left out.
    "missing_tensor": lambda r: _with_delta(r, np.asarray(r.delta)[:-10].copy()),
    # An extra tensor appended.
    "extra_tensor": lambda r: _with_delta(r, np.concatenate(
        [np.asarray(r.delta), np.zeros(10, np.float32)])),
    "wrong_shape": lambda r: _with_delta(r, np.asarray(r.delta).reshape(1, -1)),
    "wrong_dtype": lambda r: _with_delta(r, np.asarray(r.delta, dtype=np.float64)),
    "zero_examples": lambda r: replace(r, num_examples=0),
    "negative_examples": lambda r: replace(r, num_examples=-5),
    # Claims far more examples than its shard holds, to dominate the weighted mean.
    "excess_examples": lambda r: replace(r, num_examples=r.num_examples * 1000),
    # 10⁴ × its honest norm: far beyond 1000 × the round's median norm.
    "huge_norm": lambda r: _with_delta(r, (np.asarray(r.delta) * 1.0e4).astype(np.float32)),
    # Not an array at all: a Python list 10⁶ × the honest update (once not screened).
    # (Deliberately the wrong type: what screening must refuse.)
    "python_list": lambda r: replace(
        r, delta=(np.asarray(r.delta) * 1.0e6).tolist()),  # type: ignore[arg-type]
    "nan_list": lambda r: replace(
        r, delta=[float("nan")] * np.asarray(r.delta).size),  # type: ignore[arg-type]
})
