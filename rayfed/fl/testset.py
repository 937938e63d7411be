"""The server's held-out test set: built in, a file of the server's own, or the user's.

The driver opens only this: never a site's file (``dataset=files``) and never a
participant's data (``rayfed.run(participant_data=...)``).
"""

from __future__ import annotations

import torch

from rayfed.data.federated import load_test_split
from rayfed.plan import RunPlan


def server_test_set(plan: RunPlan) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                       tuple[int, ...], int]:
    """``(x, y, input_shape, num_classes)`` of the server's test set; ``x, y`` are None
    when the users' data has none (``dataset.test_path`` or ``test_data`` unset)."""
    data, user = plan.data, plan.user
    if data.source is None and not user.own_data:
        test = load_test_split(plan.config.dataset)
        return torch.from_numpy(test.x), torch.from_numpy(test.y), test.input_shape, \
            test.num_classes
    if data.input_shape is None or data.num_classes is None:
        raise ValueError("the plan has no input shape for the users' data")
    x = y = None
    if data.source is not None:
        from rayfed.data.files import load_test

        held_out = load_test(data.source)  # the server's own file, never a site's
        if held_out is not None:
            x, y = torch.from_numpy(held_out.x), torch.from_numpy(held_out.y)
    elif user.test_data is not None:
        from rayfed.data.user import as_arrays

        test_data = user.test_data() if callable(user.test_data) else user.test_data
        xa, ya = as_arrays(test_data, what="test_data")
        x, y = torch.from_numpy(xa), torch.from_numpy(ya)
    return x, y, data.input_shape, data.num_classes
