"""Files in and out: self-describing safetensors checkpoints, research-checkpoint import, atomic writes.

- :mod:`.checkpoints`: ``save_checkpoint`` / ``load_checkpoint``
- :mod:`.header`: safetensors header parsing and ``read_checkpoint_header`` (no tensor data read, no torch import)
- :mod:`.schema`: the JSON metadata a checkpoint carries, and its validation
- :mod:`.legacy`: ``import_research_checkpoint`` for bare state dicts (pickled ``.pt`` behind a flag)
- :mod:`.atomic`: ``atomic_write`` (temporary file, then rename), used by every writer in midefend

The names load their module on first use (PEP 562), so reading a header (``midefend inspect``) never
imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .atomic import atomic_write as atomic_write
    from .atomic import atomic_write_bytes as atomic_write_bytes
    from .atomic import atomic_write_text as atomic_write_text
    from .checkpoints import Checkpoint as Checkpoint
    from .checkpoints import load_checkpoint as load_checkpoint
    from .checkpoints import save_checkpoint as save_checkpoint
    from .checkpoints import strip_state_dict_prefixes as strip_state_dict_prefixes
    from .header import read_checkpoint_header as read_checkpoint_header
    from .legacy import import_research_checkpoint as import_research_checkpoint

_LAZY = {
    "Checkpoint": "midefend.io.checkpoints",
    "atomic_write": "midefend.io.atomic",
    "atomic_write_bytes": "midefend.io.atomic",
    "atomic_write_text": "midefend.io.atomic",
    "import_research_checkpoint": "midefend.io.legacy",
    "load_checkpoint": "midefend.io.checkpoints",
    "read_checkpoint_header": "midefend.io.header",
    "save_checkpoint": "midefend.io.checkpoints",
    "strip_state_dict_prefixes": "midefend.io.checkpoints",
}

__all__ = [
    "Checkpoint",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "import_research_checkpoint",
    "load_checkpoint",
    "read_checkpoint_header",
    "save_checkpoint",
    "strip_state_dict_prefixes",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'midefend.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
