"""TL-DMI: fine-tune only the last part of a pre-trained network (Ho, Hao, Chen, Chandrasegaran, Lee and Cheung, CVPR 2024).

The early layers are pre-trained on public data and frozen; only the last
part is fine-tuned on the private data, so fewer parameters carry information
about it. The strength is the frozen fraction: :func:`freeze_leading` freezes
the longest leading run of parameter tensors (in ``model.parameters()`` order,
which follows the network from input to output) whose elements make up at most
``fraction`` of all parameters; the classifier head is never frozen.

Without a public pre-trained backbone (offline, none can be downloaded),
midefend starts from a model trained on the private data itself (the NoDef
model, or a pre-training stage): then the frozen layers have seen the private
data, which is a weaker setting than the paper's. ``--arch facenet`` (a
face-pretrained backbone) is the faithful setting where available.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))   # 20 + 10 parameters
>>> frozen = freeze_leading(net, 0.7)
>>> frozen, [p.requires_grad for p in net.parameters()]
(['0.weight', '0.bias'], [False, False, True, True])
"""

from __future__ import annotations

import torch.nn as nn

from ..._validate import fail, is_real

__all__ = ["DEFAULT_FREEZE", "check_fraction", "freeze_leading"]

#: The frozen fraction when none is given.
DEFAULT_FREEZE = 0.5


def check_fraction(value: object) -> float:
    if not is_real(value) or not 0 <= value < 1:
        raise fail("freeze", "a fraction in [0, 1) of the parameters to freeze", value)
    return float(value)


def freeze_leading(model: nn.Module, fraction: float, *, keep: list[str] | None = None) -> list[str]:
    """Set ``requires_grad=False`` on the leading ``fraction`` of ``model``'s parameters; returns their names.

    ``keep``: dotted module paths whose parameters stay trainable (default: the
    classifier head(s), found as :func:`midefend.harden` finds them; none when
    the model has no recognisable head). Freezing stops at the first kept parameter.
    """
    fraction = check_fraction(fraction)
    if keep is None:
        from ..head_locations import find_head_paths
        from ...errors import HeadNotFoundError

        try:
            keep = find_head_paths(model)
        except HeadNotFoundError:
            keep = []
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for _, p in named)
    budget, used, frozen = fraction * total, 0, []
    for name, p in named:
        if any(name == k or name.startswith(k + ".") for k in keep) or used + p.numel() > budget:
            break
        p.requires_grad_(False)
        used += p.numel()
        frozen.append(name)
    return frozen
