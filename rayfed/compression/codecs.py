"""Update codecs: unbiased stochastic int8 quantization and top-k with error feedback.

* **int8** — each tensor of the flat update is scaled by its own
  ``s = max|x| / 127`` and rounded *stochastically* to ``floor(x/s + u)``,
  ``u ~ U[0, 1)``, so that ``E[s · q] = x``: the quantizer of QSGD (Alistarh et
  al. 2017, "QSGD: Communication-Efficient SGD via Gradient Quantization and
  Encoding") with 255 levels and the max-norm. The error of one value is below
  one step ``s``; being unbiased, it averages out across participants.
* **top-k** — only the ``k`` largest-magnitude coordinates are sent; what is not
  sent is kept in a residual and added to the next round's update (error
  feedback: Stich, Cordonnier & Jaggi 2018, "Sparsified SGD with Memory";
  Karimireddy et al. 2019, "Error Feedback Fixes SignSGD"). Nothing is lost:
  sent + new residual == old residual + update, exactly.

Payloads are frozen values that pickle as one compact frame, so the pickled size
counted as ``payload_bytes`` is the size of the bytes a real wire would carry.
Pure functions over numpy arrays; the random generator is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

INT8_LEVELS = 127  # symmetric: codes in [-127, 127], so 0 is exact


def _frame(*arrays: np.ndarray) -> bytes:
    return b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)


@dataclass(frozen=True, eq=False)
class QuantizedUpdate:
    """int8 codes of a flat update, with one float32 scale per tensor."""

    codes: np.ndarray  # int8, (n,)
    scales: np.ndarray  # float32, (num_tensors,)
    sizes: np.ndarray  # int32, (num_tensors,): the tensors' lengths in ``codes``

    @property
    def num_tensors(self) -> int:
        return len(self.sizes)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        # Wire frame: [num_tensors:i4][sizes:i4·t][scales:f4·t][codes:i1·n].
        head = np.array([self.num_tensors], dtype="<i4")
        return (_quantized_from_frame, (_frame(head, self.sizes.astype("<i4"),
                                               self.scales.astype("<f4"), self.codes),))


def _quantized_from_frame(frame: bytes) -> QuantizedUpdate:
    t = int(np.frombuffer(frame, dtype="<i4", count=1)[0])
    sizes = np.frombuffer(frame, dtype="<i4", count=t, offset=4).astype(np.int32)
    scales = np.frombuffer(frame, dtype="<f4", count=t, offset=4 + 4 * t).astype(np.float32)
    codes = np.frombuffer(frame, dtype=np.int8, offset=4 + 8 * t).copy()
    return QuantizedUpdate(codes, scales, sizes)


def _check_sizes(n: int, sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(sizes if len(sizes) else (n,), dtype=np.int64)
    if arr.sum() != n or (arr <= 0).any():
        raise ValueError(f"tensor sizes {tuple(arr)} do not partition an update of {n} values")
    return arr


def int8_scales(x: np.ndarray, sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    """One float32 quantization step per tensor: ``max|x_tensor| / 127``."""
    arr = _check_sizes(x.size, sizes)
    starts = np.concatenate(([0], np.cumsum(arr)[:-1]))
    peaks = np.maximum.reduceat(np.abs(x.astype(np.float64)), starts)
    return (peaks / INT8_LEVELS).astype(np.float32)


def quantize_int8(x: np.ndarray, *, sizes: Sequence[int] = (),
                  rng: np.random.Generator) -> QuantizedUpdate:
    """Unbiased stochastic int8 quantization of flat ``x``, one scale per tensor."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    arr = _check_sizes(x.size, sizes)
    scales = int8_scales(x, arr)
    # Divide by the float32 scale actually sent, so that decoding is exact in
    # expectation; an all-zero tensor gets step 1 and codes 0.
    step = np.repeat(np.where(scales > 0, scales, 1).astype(np.float64), arr)
    scaled = x.astype(np.float64) / step
    # Clip only guards float round-off at ±127 (|scaled| <= 127 mathematically).
    codes = np.clip(np.floor(scaled + rng.random(x.size)), -INT8_LEVELS, INT8_LEVELS)
    return QuantizedUpdate(codes.astype(np.int8), scales, arr.astype(np.int32))


def dequantize_int8(u: QuantizedUpdate) -> np.ndarray:
    """The float32 update ``s_tensor · q`` that ``u`` encodes."""
    step = np.repeat(u.scales, u.sizes.astype(np.int64))
    return u.codes.astype(np.float32) * step


@dataclass(frozen=True, eq=False)
class SparseUpdate:
    """The ``k`` coordinates of a length-``size`` update that were sent."""

    size: int
    indices: np.ndarray  # uint16 when size <= 65536, else int32; ascending
    values: np.ndarray  # float32

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        # Wire frame: [size:i4][k:i4][indices][values:f4·k]; the index width
        # follows from size, so it is not sent.
        head = np.array([self.size, len(self.indices)], dtype="<i4")
        return (_sparse_from_frame, (_frame(head, self.indices.astype(index_dtype(self.size)),
                                            self.values.astype("<f4")),))


def index_dtype(size: int) -> np.dtype[Any]:
    """The narrowest index type that addresses ``size`` coordinates."""
    return np.dtype("<u2") if size <= 1 << 16 else np.dtype("<i4")


def _sparse_from_frame(frame: bytes) -> SparseUpdate:
    size, k = (int(v) for v in np.frombuffer(frame, dtype="<i4", count=2))
    idt = index_dtype(size)
    indices = np.frombuffer(frame, dtype=idt, count=k, offset=8).copy()
    values = np.frombuffer(frame, dtype="<f4", count=k, offset=8 + k * idt.itemsize).copy()
    return SparseUpdate(size, indices, values)


def topk_count(size: int, ratio: float) -> int:
    """How many coordinates a ``ratio`` keeps: ``ceil(ratio · size)``, at least one."""
    return min(size, max(1, math.ceil(ratio * size)))


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the ``k`` largest ``|x|`` (ties broken by position)."""
    if k >= x.size:
        return np.arange(x.size)
    # A stable sort on -|x| keeps the earliest of equal magnitudes, so that the
    # choice is deterministic; argpartition first keeps it O(n) for large n.
    mag = np.abs(x)
    cut = np.partition(mag, x.size - k)[x.size - k]
    candidates = np.flatnonzero(mag >= cut)
    chosen = candidates[np.argsort(-mag[candidates], kind="stable")[:k]]
    return np.sort(chosen)


def sparsify(x: np.ndarray, k: int) -> SparseUpdate:
    """Top-``k`` sparsification of flat ``x`` (no memory)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    idx = topk_indices(x, k)
    return SparseUpdate(x.size, idx.astype(index_dtype(x.size)), x[idx].copy())


def densify(u: SparseUpdate) -> np.ndarray:
    """The dense float32 update that ``u`` sends (zeros where nothing was sent)."""
    out = np.zeros(u.size, dtype=np.float32)
    out[u.indices.astype(np.int64)] = u.values
    return out


def sparsify_with_feedback(update: np.ndarray, residual: np.ndarray | None, *,
                           k: int) -> tuple[SparseUpdate, np.ndarray]:
    """One round of top-k with error feedback: ``(sent, new_residual)``.

    ``acc = residual + update``; the ``k`` largest coordinates of ``acc`` are sent
    and the rest becomes the new residual, so ``densify(sent) + new_residual ==
    acc`` holds exactly.
    """
    update = np.asarray(update, dtype=np.float32).reshape(-1)
    if residual is None:
        acc = update.copy()
    elif residual.shape != update.shape:
        raise ValueError(f"error-feedback residual has shape {residual.shape} but the update "
                         f"has {update.shape}; the model changed under a carried state")
    else:
        acc = residual.astype(np.float32) + update
    sent = sparsify(acc, k)
    acc[sent.indices.astype(np.int64)] = 0.0
    return sent, acc
