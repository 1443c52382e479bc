"""Files in and out: self-describing safetensors checkpoints, research-checkpoint import, atomic writes.

- :mod:`.checkpoints`: ``save_checkpoint`` / ``load_checkpoint`` / ``read_checkpoint_header``
- :mod:`.schema`: the JSON metadata a checkpoint carries, and its validation
- :mod:`.header`: safetensors header parsing (no tensor data read)
- :mod:`.legacy`: ``import_research_checkpoint`` for bare state dicts (pickled ``.pt`` behind a flag)
- :mod:`.atomic`: ``atomic_write`` (temporary file, then rename), used by every writer in midefend
"""

from __future__ import annotations

from .atomic import atomic_write as atomic_write
from .atomic import atomic_write_bytes as atomic_write_bytes
from .atomic import atomic_write_text as atomic_write_text
from .checkpoints import Checkpoint as Checkpoint
from .checkpoints import load_checkpoint as load_checkpoint
from .checkpoints import read_checkpoint_header as read_checkpoint_header
from .checkpoints import save_checkpoint as save_checkpoint
from .checkpoints import strip_state_dict_prefixes as strip_state_dict_prefixes
from .legacy import import_research_checkpoint as import_research_checkpoint

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
