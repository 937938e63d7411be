"""State trees in a format whose reading cannot execute code: JSON plus raw arrays.

Unpickling runs whatever a crafted file asks for (``__reduce__``), so no state
that crosses a trust boundary (checkpoint files on disk, a participant's carried
state that travels through the server) is pickled. A tree of dicts, lists,
tuples, strings, numbers, booleans, None, ``bytes``, NumPy arrays of numeric
dtypes and a few registered frozen dataclasses is written as a NumPy ``.npz``
archive: the entry ``tree`` holds the JSON of the structure (UTF-8), and the
arrays and byte strings are their own entries, read back with
``allow_pickle=False``. Anything else is refused when writing, and a file that
is not this format is refused when reading (:class:`UnsafeFormatError`); a value
that cannot be stored raises :class:`TypeError` when writing.

NumPy scalars are stored as Python numbers; dict keys keep their type (str or int).
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from rayfed.types import EvalRes, Failure, RoundResult

# The only classes a file may name; extend when new state needs one.
DATACLASSES: Mapping[str, type] = MappingProxyType(
    {c.__name__: c for c in (RoundResult, Failure, EvalRes)})
_TREE = "tree"


class UnsafeFormatError(ValueError):
    """The bytes are not a safe-format tree (e.g. a pickle); nothing was interpreted."""


def dumps(tree: Any) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    doc = json.dumps(_encode(tree, arrays), allow_nan=True).encode()
    buf = io.BytesIO()
    entries: dict[str, Any] = {_TREE: np.frombuffer(doc, dtype=np.uint8), **arrays}
    np.savez(buf, **entries)
    return buf.getvalue()


def loads(blob: bytes) -> Any:
    if not zipfile.is_zipfile(io.BytesIO(blob)):
        raise UnsafeFormatError("not a safe-format archive (a pickle or other bytes?); "
                                "refusing to interpret it")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        doc = json.loads(arrays.pop(_TREE).tobytes().decode())
        return _decode(doc, arrays)
    except UnsafeFormatError:
        raise
    except Exception as exc:  # malformed zip, object arrays, bad JSON, missing keys
        raise UnsafeFormatError(f"malformed safe-format archive: {type(exc).__name__}: "
                                f"{exc}") from exc


def _put(arrays: dict[str, np.ndarray], value: np.ndarray) -> str:
    key = f"a{len(arrays)}"
    arrays[key] = value
    return key


def _encode(x: Any, arrays: dict[str, np.ndarray]) -> Any:
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, np.generic) and not isinstance(x, np.void):
        return x.item()
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject or x.dtype.kind not in "biufc":
            raise TypeError(f"arrays of dtype {x.dtype} cannot be stored safely")
        return {"$t": "nd", "k": _put(arrays, np.ascontiguousarray(x))}
    if isinstance(x, bytes | bytearray | memoryview):
        return {"$t": "bytes", "k": _put(arrays, np.frombuffer(bytes(x), dtype=np.uint8))}
    if isinstance(x, tuple):
        return {"$t": "tuple", "v": [_encode(v, arrays) for v in x]}
    if isinstance(x, list):
        return [_encode(v, arrays) for v in x]
    if isinstance(x, Mapping):
        bad = [k for k in x if not isinstance(k, str | int) or isinstance(k, bool)]
        if bad:
            raise TypeError(f"dict keys must be str or int, got {bad[:3]}")
        return {"$t": "dict", "v": [[k, _encode(v, arrays)] for k, v in x.items()]}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        name = type(x).__name__
        if DATACLASSES.get(name) is not type(x):
            raise TypeError(f"{name} is not a registered dataclass of "
                                    "rayfed.fl.safe_format.DATACLASSES")
        fields = {f.name: _encode(getattr(x, f.name), arrays) for f in dataclasses.fields(x)}
        return {"$t": "dc", "name": name, "v": fields}
    raise TypeError(f"values of type {type(x).__name__} cannot be stored safely")


def _decode(x: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if not isinstance(x, dict):
        return x
    tag = x["$t"]
    if tag == "nd":
        return arrays[x["k"]]
    if tag == "bytes":
        return arrays[x["k"]].tobytes()
    if tag == "tuple":
        return tuple(_decode(v, arrays) for v in x["v"])
    if tag == "dict":
        return {k: _decode(v, arrays) for k, v in x["v"]}
    if tag == "dc":
        cls = DATACLASSES[x["name"]]
        return cls(**{k: _decode(v, arrays) for k, v in x["v"].items()})
    raise UnsafeFormatError(f"unknown tag {tag!r}")
