"""A user's own data from the Python API, as the arrays and shards rayfed trains on.

``rayfed.run(participant_data=fn)`` calls ``fn(participant_id)`` inside that
participant's actor; it returns ``(train, val)``, each an ``(x, y)`` pair of
arrays or tensors, an :class:`~rayfed.data.datasets.ArrayDataset`, or any map-style
``torch.utils.data.Dataset`` of ``(x, y)`` items (read once, into memory).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rayfed.data.federated import ClientData
from rayfed.errors import DataError


def as_arrays(data: Any, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32, y int64)`` from any of the forms the module docstring lists."""
    if hasattr(data, "x") and hasattr(data, "y"):
        data = (data.x, data.y)
    elif isinstance(data, torch.utils.data.TensorDataset):
        data = tuple(data.tensors[:2])
    elif isinstance(data, torch.utils.data.Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        data = (torch.stack([torch.as_tensor(x) for x, _ in items]),
                torch.as_tensor([int(y) for _, y in items]))
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise DataError(f"{what} must be (x, y) arrays, an ArrayDataset or a torch Dataset of "
                        f"(x, y) items; got {type(data).__name__}")
    x, y = (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            for t in data)
    if len(x) != len(y):
        raise DataError(f"{what}: x has {len(x)} examples but y has {len(y)}")
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(y).astype(np.int64)


def client_data(participant_id: int, split: Any) -> ClientData:
    """One participant's shard from the ``(train, val)`` its data function returned."""
    if not (isinstance(split, tuple | list) and len(split) == 2):
        raise DataError(f"participant_data({participant_id}) must return (train, val); got "
                        f"{type(split).__name__}")
    who = f"participant_data({participant_id})"
    (x_tr, y_tr), (x_va, y_va) = (as_arrays(split[0], what=f"{who} train"),
                                  as_arrays(split[1], what=f"{who} val"))
    return ClientData(participant_id, torch.from_numpy(x_tr), torch.from_numpy(y_tr),
                      torch.from_numpy(x_va), torch.from_numpy(y_va))
