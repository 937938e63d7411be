"""A compact, loadable file format for (quantized) state dicts: what a device stores.

``torch.save`` writes a zip archive with one 64-byte-aligned record per tensor and
a pickle of the structure: about 2 kB for a small fp32 MLP and 3.5 kB for its int8
version (a scale, a zero point, a dtype and a packed-params record per layer), a
third of the int8 bytes of a 10k-parameter model. This container stores, for each
``state_dict`` entry, its key, a type tag, the shape and the raw little-endian
bytes; a quantized tensor as its integer codes plus its exact quantization
parameters (per tensor or per channel). Integer and float64 side tensors (zero
points, scales) are stored in the narrowest dtype that gives back exactly the same
values, and restored to their own dtype.

It is lossless: :func:`unpack_state_dict` of :func:`pack_state_dict` loads with
``load_state_dict`` into a freshly built model of the same structure, which then
computes bit-identical outputs. The modules' state-dict versions (torch's
``state_dict._metadata``, which quantized modules need to read their entries) are
kept too. fp32 and int8 models are measured in the same
container, so their size ratio compares like with like.

Layout (little endian)::

    file   = b"RFSD" version:u8 count:u32 entry*count nmeta:u16 meta*nmeta
    entry  = key_len:u16 key:utf8 value
    meta   = prefix_len:u16 prefix:utf8 module_version:u16
    value  = TENSOR dtype:u8 stored:u8 ndim:u8 shape:u32*ndim data
           | QTENSOR qdtype:u8 ndim:u8 shape:u32*ndim scheme:u8 axis:u8
                     scales:value zero_points:value codes
           | DTYPE dtype:u8 | TUPLE n:u8 value*n | NONE
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

MAGIC = b"RFSD"
VERSION = 1
TENSOR, QTENSOR, DTYPE, TUPLE, NONE = range(5)
PER_TENSOR, PER_CHANNEL = 0, 1

# The dtype table is part of the format: append only.
DTYPES: tuple[torch.dtype, ...] = (
    torch.float32, torch.float64, torch.float16, torch.int8, torch.uint8, torch.int16,
    torch.int32, torch.int64, torch.bool, torch.qint8, torch.quint8, torch.qint32)
_CODE = {d: i for i, d in enumerate(DTYPES)}
# Integer representation of each quantized dtype's codes.
_INT_REPR = {torch.qint8: torch.int8, torch.quint8: torch.uint8, torch.qint32: torch.int32}
# Narrower dtypes tried, in order, for side tensors; kept only when exact.
_NARROWER = {torch.int64: (torch.int8, torch.int16, torch.int32),
             torch.int32: (torch.int8, torch.int16),
             torch.float64: (torch.float32,)}


def _code(dtype: torch.dtype) -> int:
    if dtype not in _CODE:
        raise TypeError(f"dtype {dtype} cannot be stored in the rayfed state-dict container")
    return _CODE[dtype]


def _narrowest(t: torch.Tensor) -> torch.Tensor:
    for d in _NARROWER.get(t.dtype, ()):
        n = t.to(d)
        if torch.equal(n.to(t.dtype), t):
            return n
    return t


def _shape(t: torch.Tensor) -> bytes:
    return struct.pack(f"<B{t.dim()}I", t.dim(), *t.shape)


def _raw(t: torch.Tensor) -> bytes:
    arr = t.detach().contiguous().cpu().numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _pack_value(v: Any, out: list[bytes]) -> None:
    if v is None:
        out.append(bytes([NONE]))
    elif isinstance(v, torch.dtype):
        out.append(bytes([DTYPE, _code(v)]))
    elif isinstance(v, tuple | list):
        if len(v) > 255:
            raise ValueError(f"a sequence of {len(v)} values is too long for the container")
        out.append(bytes([TUPLE, len(v)]))
        for item in v:
            _pack_value(item, out)
    elif isinstance(v, torch.Tensor) and v.is_quantized:
        out.append(bytes([QTENSOR, _code(v.dtype)]) + _shape(v))
        if v.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            out.append(bytes([PER_TENSOR, 0]))
            _pack_value(torch.tensor(v.q_scale(), dtype=torch.float64), out)
            _pack_value(torch.tensor(v.q_zero_point(), dtype=torch.int64), out)
        elif v.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            out.append(bytes([PER_CHANNEL, v.q_per_channel_axis()]))
            _pack_value(v.q_per_channel_scales(), out)
            _pack_value(v.q_per_channel_zero_points(), out)
        else:
            raise TypeError(f"quantization scheme {v.qscheme()} is not supported")
        out.append(_raw(v.int_repr()))
    elif isinstance(v, torch.Tensor):
        stored = _narrowest(v.detach())
        out.append(bytes([TENSOR, _code(v.dtype), _code(stored.dtype)]) + _shape(v))
        out.append(_raw(stored))
    else:
        raise TypeError(f"a {type(v).__name__} cannot be stored in the rayfed state-dict "
                        "container (tensors, quantized tensors, dtypes, tuples, None)")


def _key(key: str) -> bytes:
    k = key.encode()
    return struct.pack("<H", len(k)) + k


def pack_state_dict(state: Mapping[str, Any]) -> bytes:
    """The bytes of ``state`` in the container (see the module docstring)."""
    out = [MAGIC, struct.pack("<BI", VERSION, len(state))]
    for key, value in state.items():
        out.append(_key(key))
        _pack_value(value, out)
    meta = getattr(state, "_metadata", None) or {}
    versions = {p: m["version"] for p, m in meta.items() if m.get("version") is not None}
    out.append(struct.pack("<H", len(versions)))
    out.extend(_key(p) + struct.pack("<H", v) for p, v in versions.items())
    return b"".join(out)


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob, self.pos = memoryview(blob), 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.blob, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def key(self) -> str:
        (n,) = self.take("<H")
        self.pos += n
        return bytes(self.blob[self.pos - n : self.pos]).decode()

    def shape(self) -> tuple[int, ...]:
        (ndim,) = self.take("<B")
        return tuple(self.take(f"<{ndim}I"))

    def array(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype.newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64))
        arr = np.frombuffer(self.blob, dtype=np_dtype, count=count, offset=self.pos)
        self.pos += count * np_dtype.itemsize
        return torch.from_numpy(arr.astype(np_dtype.newbyteorder("="))).reshape(shape)

    def value(self) -> Any:
        (tag,) = self.take("<B")
        if tag == NONE:
            return None
        if tag == DTYPE:
            return DTYPES[self.take("<B")[0]]
        if tag == TUPLE:
            (n,) = self.take("<B")
            return tuple(self.value() for _ in range(n))
        if tag == TENSOR:
            dtype, stored = (DTYPES[c] for c in self.take("<BB"))
            return self.array(stored, self.shape()).to(dtype)
        if tag == QTENSOR:
            qdtype = DTYPES[self.take("<B")[0]]
            shape = self.shape()
            scheme, axis = self.take("<BB")
            scales, zero_points = self.value(), self.value()
            codes = self.array(_INT_REPR[qdtype], shape)
            if scheme == PER_TENSOR:
                return torch._make_per_tensor_quantized_tensor(
                    codes, float(scales), int(zero_points))
            return torch._make_per_channel_quantized_tensor(codes, scales, zero_points, axis)
        raise ValueError(f"corrupt state-dict container: unknown tag {tag} at byte "
                         f"{self.pos - 1}")


def unpack_state_dict(blob: bytes) -> OrderedDict[str, Any]:
    """The state dict :func:`pack_state_dict` stored in ``blob``."""
    if blob[:4] != MAGIC:
        raise ValueError("not a rayfed state-dict container (bad magic bytes)")
    r = _Reader(blob)
    r.pos = 4
    version, count = r.take("<BI")
    if version != VERSION:
        raise ValueError(f"state-dict container version {version}; this rayfed reads "
                         f"{VERSION}")
    state: OrderedDict[str, Any] = OrderedDict()
    for _ in range(count):
        key = r.key()
        state[key] = r.value()
    (nmeta,) = r.take("<H")
    metadata: OrderedDict[str, dict[str, int]] = OrderedDict()
    for _ in range(nmeta):
        prefix = r.key()
        metadata[prefix] = {"version": r.take("<H")[0]}
    state._metadata = metadata  # type: ignore[attr-defined]
    if r.pos != len(blob):
        raise ValueError(f"corrupt state-dict container: {len(blob) - r.pos} trailing bytes")
    return state
