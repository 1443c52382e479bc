"""Read and check a safetensors header without reading any tensor data.

The safetensors layout is deliberately simple (https://github.com/huggingface/safetensors)::

    [8 bytes: N, little-endian uint64][N bytes: JSON header][tensor data ...]

The JSON header maps each tensor name to ``{"dtype": "F32", "shape": [10, 512],
"data_offsets": [begin, end]}`` (offsets relative to the start of the data
section) and may hold a ``"__metadata__"`` dict of *string* to *string*. The data
section must be covered exactly: the tensors' byte ranges are contiguous, do not
overlap, start at 0 and end at the end of the file.

:func:`read_safetensors_header` parses that header itself (reading ``8 + N``
bytes, whatever the file size) and checks every invariant, so a truncated,
zero-byte or garbage file, or a header whose shapes do not match its byte
ranges, is reported with a precise one-line :class:`~midefend.errors.CheckpointError`
before anything else is read. A pickled PyTorch file (``torch.save``) is
recognised by its first bytes and refused with
:class:`~midefend.errors.UnsafeCheckpointError`, before any unpickling.

>>> import tempfile, pathlib, torch
>>> from safetensors.torch import save_file
>>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
>>> save_file({"w": torch.zeros(2, 3)}, str(path), metadata={"k": "v"})
>>> header = read_safetensors_header(path)
>>> header.metadata, header.tensors["w"].shape, header.tensors["w"].nbytes
({'k': 'v'}, (2, 3), 24)
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from typing import Any

from ..errors import CheckpointError, UnsafeCheckpointError
from .schema import decode_metadata

__all__ = ["DTYPE_SIZES", "SafetensorsHeader", "TensorInfo", "looks_like_pickle", "read_checkpoint_header", "read_safetensors_header"]

# Bytes per element of each safetensors dtype code that torch can hold.
DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip

# The safetensors library refuses headers above 100 MB; a larger length is garbage.
MAX_HEADER_BYTES = 100_000_000

# torch.save writes a zip archive ("PK\x03\x04"); the legacy format and plain
# pickle.dump start with the PROTO opcode 0x80 followed by the protocol number.
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header: string metadata (``None`` when absent) and tensors in file order."""

    metadata: dict[str, str] | None
    tensors: dict[str, TensorInfo]
    header_bytes: int
    file_bytes: int

    @property
    def data_bytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())


def looks_like_pickle(first_bytes: bytes) -> bool:
    """True for the first bytes of a ``torch.save`` zip archive or a protocol-2+ pickle.

    >>> looks_like_pickle(b"PK\\x03\\x04...."), looks_like_pickle(b"\\x80\\x02}q\\x00")
    (True, True)
    """
    if first_bytes.startswith(_ZIP_MAGIC):
        return True
    return len(first_bytes) >= 2 and first_bytes[0] == 0x80 and 2 <= first_bytes[1] <= 5


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and validate the header of the safetensors file at ``path`` (no tensor data is read).

    Raises:
        CheckpointError: missing file, folder, empty/short/truncated/garbage file,
            invalid JSON, or a header that breaks the format's invariants.
        UnsafeCheckpointError: the file is a pickle (``torch.save``), not safetensors.
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {name!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {name!r} is a folder, expected a .safetensors file")
    if not path.is_file():
        # A named pipe or a device: open() of a FIFO would block forever, /dev/zero never ends.
        raise CheckpointError(f"checkpoint {name!r} is not a regular file (a pipe, socket or device)")
    try:
        with open(path, "rb") as handle:
            file_bytes = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if file_bytes == 0:
                raise CheckpointError(f"checkpoint {name!r} is empty (0 bytes)")
            if looks_like_pickle(prefix):
                raise UnsafeCheckpointError(
                    f"checkpoint {name!r} is a pickled PyTorch file, not safetensors; unpickling can run code, so it "
                    "is only read by import_research_checkpoint(..., allow_pickle=True) on files you trust"
                )
            if len(prefix) < 8:
                raise CheckpointError(f"checkpoint {name!r} is too short ({file_bytes} bytes) to be a safetensors file")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len == 0 or header_len > MAX_HEADER_BYTES or header_len > file_bytes - 8:
                raise CheckpointError(
                    f"checkpoint {name!r} is not a valid safetensors file: its first 8 bytes announce a "
                    f"{header_len}-byte header but the file has {file_bytes} bytes (truncated or not safetensors)"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {name!r}: {exc.strerror or exc}") from exc
    header = _decode_json(raw, name)
    metadata = _parse_metadata(header.pop("__metadata__", None), name)
    tensors = _parse_tensors(header, name, data_bytes=file_bytes - 8 - header_len)
    return SafetensorsHeader(metadata=metadata, tensors=tensors, header_bytes=header_len, file_bytes=file_bytes)


def _decode_json(raw: bytes, name: str) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {name!r} is not a valid safetensors file: its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {name!r} is not a valid safetensors file: its header is not a JSON object")
    return header


def _parse_metadata(metadata: object, name: str) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(f"checkpoint {name!r}: safetensors __metadata__ must map strings to strings")
    return metadata


def _parse_tensors(header: dict, name: str, *, data_bytes: int) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for key, entry in header.items():
        info, span = _parse_entry(key, entry, name)
        tensors[key] = info
        spans.append((*span, key))
    # The format requires the byte ranges to tile the data section exactly.
    spans.sort()
    position = 0
    for begin, end, key in spans:
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else f"leaves a gap at byte {position}"
            raise CheckpointError(f"checkpoint {name!r}: tensor {key!r} {kind} (data_offsets start at {begin})")
        position = end
    if position > data_bytes:
        raise CheckpointError(
            f"checkpoint {name!r} is truncated: its header describes {position} bytes of tensor data "
            f"but the file holds only {data_bytes}"
        )
    if position < data_bytes:
        raise CheckpointError(
            f"checkpoint {name!r} is corrupt: {data_bytes - position} bytes after the last tensor are not described by its header"
        )
    return tensors


def _parse_entry(key: str, entry: object, name: str) -> tuple[TensorInfo, tuple[int, int]]:
    where = f"checkpoint {name!r}: tensor {key!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{where} must have exactly the fields dtype, shape and data_offsets, got {entry!r:.80}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:  # a JSON list or object is unhashable
        raise CheckpointError(f"{where} has unsupported dtype {dtype!r:.80}")
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        raise CheckpointError(f"{where} has an invalid shape {shape!r} (expected a list of non-negative integers)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]:
        raise CheckpointError(f"{where} has invalid data_offsets {offsets!r} (expected [begin, end] with begin <= end)")
    nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
    if offsets[1] - offsets[0] != nbytes:
        raise CheckpointError(
            f"{where} claims shape {shape} of {dtype} ({nbytes} bytes) but its data_offsets span {offsets[1] - offsets[0]} bytes"
        )
    return TensorInfo(dtype=dtype, shape=tuple(shape), nbytes=nbytes), (offsets[0], offsets[1])


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_checkpoint_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata and tensor list of a midefend checkpoint, from its header alone (no tensor data read).

    Returns a JSON-serialisable dict: the validated metadata fields (``arch``,
    ``arch_kwargs``, ``num_classes``, ``classes``, ``input_size``, ``mean``, ``std``,
    ``defense``, ``hardening``, ``extra``, ``format_version``, and
    ``midefend_version`` when present), plus ``path``, ``tensors``
    (``{name: {"dtype": "F32", "shape": [...]}}`` in file order),
    ``num_tensors``, ``num_parameters`` (elements of all tensors, buffers
    included), ``tensor_bytes`` and ``file_bytes``.

    Raises:
        CheckpointError: the file is missing, not a valid safetensors file, or
            carries no or wrong-schema midefend metadata.
        UnsafeCheckpointError: the file is a pickle.
    """
    header = read_safetensors_header(path)
    meta = decode_metadata(header.metadata, name=str(path))
    tensors = {name: {"dtype": info.dtype, "shape": list(info.shape)} for name, info in header.tensors.items()}
    num_parameters = sum(math.prod(info.shape) for info in header.tensors.values())
    return {
        **meta,
        "path": str(path),
        "tensors": tensors,
        "num_tensors": len(tensors),
        "num_parameters": num_parameters,
        "tensor_bytes": header.data_bytes,
        "file_bytes": header.file_bytes,
    }
