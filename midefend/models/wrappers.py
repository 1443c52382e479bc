"""The module inside a wrapper: ``torch.compile``, ``DataParallel``, ``DistributedDataParallel``."""

from __future__ import annotations

from typing import Any

import torch.nn as nn


def unwrap_model(model: Any) -> Any:
    """The module that owns the parameters, inside any nesting of ``torch.compile``'s
    ``OptimizedModule`` (``_orig_mod``) and (Distributed)DataParallel (``module``).

    >>> net = nn.Linear(2, 2)
    >>> unwrap_model(nn.DataParallel(net)) is net
    True
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
