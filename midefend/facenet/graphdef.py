"""Read the constant tensors of a frozen TensorFlow ``GraphDef`` without TensorFlow or protobuf.

A frozen graph is one protobuf message: ``GraphDef { repeated NodeDef node = 1; }``,
each ``NodeDef { string name = 1; string op = 2; repeated string input = 3;
map<string, AttrValue> attr = 5; }``. Protobuf's wire format is simple enough
to walk by hand: every field is a varint key ``(number << 3) | wire_type``
followed by a varint (type 0), 8 bytes (1), a length-prefixed payload (2) or
4 bytes (5). Only the handful of fields a frozen vision graph uses are decoded:
node names, ops, inputs, and the attributes ``value`` (a ``TensorProto``),
``strides``/``ksize`` (int lists), ``padding`` (bytes), ``epsilon`` (float),
``dtype`` and ``T`` (enums). Unknown fields are skipped, as protobuf itself
does.

>>> blob = bytes([0x0A, 0x07, 0x0A, 0x01, ord("x"), 0x12, 0x02, ord("I"), ord("d")])
>>> [(n.name, n.op) for n in parse_graph(blob)]
[('x', 'Id')]
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CheckpointError

# TensorFlow DataType enum values -> numpy dtypes (the ones a frozen graph's constants use).
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 9: np.int64, 10: np.bool_, 19: np.float16}
# TensorProto's typed repeated fields (packed): field number -> (numpy dtype, decoder).
_FLOAT_VAL, _DOUBLE_VAL, _INT_VAL, _INT64_VAL, _BOOL_VAL = 5, 6, 7, 10, 11


class GraphFormatError(CheckpointError):
    """The bytes are not a well-formed GraphDef (truncated or damaged file)."""


@dataclass
class Node:
    """One ``NodeDef``: its name, op, inputs and the attributes decoded into Python values."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise GraphFormatError("varint longer than 10 bytes")


def fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """``(field_number, wire_type, value)`` of one message; length-delimited values are memoryviews."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise GraphFormatError(f"unsupported wire type {wire} (field {number})")
        if pos > end or number == 0:
            raise GraphFormatError("field runs past the end of its message")
        yield number, wire, value


def _packed(value: Any, wire: int, fmt: str) -> list[Any]:
    """A repeated scalar field: packed (one length-delimited blob) or one element per occurrence."""
    if wire == 2:
        if fmt == "varint":
            out, pos = [], 0
            while pos < len(value):
                item, pos = _varint(value, pos)
                out.append(item)
            return out
        return list(struct.unpack(f"<{len(value) // struct.calcsize(fmt)}{fmt}", value))
    if fmt == "varint":
        return [value]
    return [struct.unpack(f"<{fmt}", value)[0]]


def _signed(value: int) -> int:
    # int32/int64 fields encode negatives as 10-byte two's complement varints.
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(buf: memoryview) -> tuple[int, ...]:
    dims = []
    for number, _, dim in fields(buf):
        if number == 2:
            size = 0
            for n, _, v in fields(dim):
                if n == 1:
                    size = _signed(v)
            dims.append(size)
    return tuple(dims)


def parse_tensor(buf: memoryview) -> np.ndarray:
    """A ``TensorProto`` as a numpy array (raw ``tensor_content`` or typed repeated values)."""
    dtype_enum, shape, content = 0, (), None
    values: list[Any] = []
    for number, wire, value in fields(buf):
        if number == 1:
            dtype_enum = value
        elif number == 2:
            shape = _shape(value)
        elif number == 4:
            content = bytes(value)
        elif number == _FLOAT_VAL:
            values += _packed(value, wire, "f")
        elif number == _DOUBLE_VAL:
            values += _packed(value, wire, "d")
        elif number in (_INT_VAL, _INT64_VAL, _BOOL_VAL):
            values += [_signed(v) for v in _packed(value, wire, "varint")]
    if dtype_enum not in _DTYPES:
        raise GraphFormatError(f"unsupported tensor dtype enum {dtype_enum}")
    dtype = np.dtype(_DTYPES[dtype_enum]).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        if len(content) != count * dtype.itemsize:
            raise GraphFormatError(f"tensor content has {len(content)} bytes, shape {shape} needs {count * dtype.itemsize}")
        return np.frombuffer(content, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    array = np.asarray(values, dtype=dtype.newbyteorder("="))
    if array.size == count:
        return array.reshape(shape)
    if array.size == 1:  # TF stores a constant filled with one value as that value once
        return np.full(shape, array[0], dtype=array.dtype)
    if array.size == 0:
        return np.zeros(shape, dtype=array.dtype)
    raise GraphFormatError(f"tensor has {array.size} values, shape {shape} needs {count}")


def _attr_value(buf: memoryview) -> Any:
    """The populated member of an ``AttrValue`` oneof (list, bytes, int, float, bool, type, shape, tensor)."""
    for number, _wire, value in fields(buf):
        if number == 1:  # ListValue: s = 2, i = 3, f = 4
            out: list[Any] = []
            for n, w, v in fields(value):
                if n == 2:
                    out.append(bytes(v).decode("utf-8", "replace"))
                elif n == 3:
                    out += [_signed(i) for i in _packed(v, w, "varint")]
                elif n == 4:
                    out += _packed(v, w, "f")
            return out
        if number == 2:
            return bytes(value).decode("utf-8", "replace")
        if number in (3, 6):
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 5:
            return bool(value)
        if number == 7:
            return _shape(value)
        if number == 8:
            return parse_tensor(value)
    return None


def _node(buf: memoryview) -> Node:
    name = op = ""
    inputs: list[str] = []
    attrs: dict[str, Any] = {}
    for number, _, value in fields(buf):
        if number == 1:
            name = bytes(value).decode("utf-8")
        elif number == 2:
            op = bytes(value).decode("utf-8")
        elif number == 3:
            inputs.append(bytes(value).decode("utf-8"))
        elif number == 5:
            key, entry = "", None
            for n, _, v in fields(value):
                if n == 1:
                    key = bytes(v).decode("utf-8")
                elif n == 2:
                    entry = v
            attrs[key] = _attr_value(entry) if entry is not None else None
    return Node(name=name, op=op, inputs=inputs, attrs=attrs)


def parse_graph(data: bytes | memoryview) -> list[Node]:
    """Every node of a serialised ``GraphDef``, in file order.

    Raises:
        GraphFormatError: the bytes are truncated or not a GraphDef.
    """
    buf = memoryview(data)
    try:
        return [_node(value) for number, wire, value in fields(buf) if number == 1 and wire == 2]
    except GraphFormatError:
        raise
    except (UnicodeDecodeError, struct.error, ValueError, IndexError) as exc:
        raise GraphFormatError(f"malformed GraphDef: {exc}") from None


__all__ = ["GraphFormatError", "Node", "fields", "parse_graph", "parse_tensor"]
