"""A small reader of TensorFlow's frozen-graph format (`GraphDef` protobuf), in Python + numpy.

Why: the FaceNet-512 weights ship as a frozen `.pb`; installing TensorFlow or
the protobuf package to read constants out of it would be a heavy dependency
for one conversion. Only what a frozen graph needs is decoded: each node's
name, op, inputs and attributes, and `Const` tensors into numpy arrays.

Wire format (protobuf encoding): a message is a sequence of (tag, value)
where tag = field_number << 3 | wire_type; wire types 0 varint, 1 fixed 64
bit, 2 length-delimited, 5 fixed 32 bit. Field numbers below come from
tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from ..errors import WeightsMismatchError

# DataType enum -> numpy dtype (the numeric types a frozen graph holds).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
DT_STRING = 7
# TensorProto's typed value fields: field number -> how one element is encoded.
_VALUE_FIELDS: dict[int, str] = {
    5: "f32",  # float_val
    6: "f64",  # double_val
    7: "varint",  # int_val (int32, uint8, int16, int8 also land here)
    10: "varint",  # int64_val
    11: "varint",  # bool_val
    13: "varint",  # half_val (float16 bit patterns)
    16: "varint",  # uint32_val
    17: "varint",  # uint64_val
}


class GraphDefError(WeightsMismatchError):
    """The bytes are not a (readable) TensorFlow GraphDef."""


# --- protobuf wire format ---------------------------------------------------------------

def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphDefError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise GraphDefError("varint longer than 10 bytes")


Value = Union[int, memoryview]


def fields(buf: memoryview) -> Iterator[tuple[int, int, Value]]:
    """(field number, wire type, value) of each field of one message; length-delimited values stay raw bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise GraphDefError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise GraphDefError(f"unsupported wire type {wire} (field {number})")
        if pos > end:
            raise GraphDefError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _text(value: Value) -> str:
    if not isinstance(value, memoryview):
        raise GraphDefError("expected a string field, found a number")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GraphDefError(f"string field is not UTF-8 ({exc})") from exc


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _scalars(wire: int, value: Value, kind: str) -> list:
    """Values of a repeated scalar field, packed (one length-delimited run) or not (one value)."""
    if kind == "f32":
        return np.frombuffer(value, "<f4").tolist() if wire == 2 else [np.uint32(value).view("<f4").item()]
    if kind == "f64":
        return np.frombuffer(value, "<f8").tolist() if wire == 2 else [np.uint64(value).view("<f8").item()]
    if wire != 2:
        return [_signed(value)]  # type: ignore[arg-type]
    out, pos = [], 0
    while pos < len(value):  # type: ignore[arg-type]
        v, pos = _varint(value, pos)  # type: ignore[arg-type]
        out.append(_signed(v))
    return out


# --- TensorFlow messages ----------------------------------------------------------------

def parse_shape(buf: memoryview) -> tuple[int, ...] | None:
    """TensorShapeProto -> dims (-1 unknown), or None for an unknown rank."""
    dims: list[int] = []
    for number, _, value in fields(buf):
        if number == 2:  # dim { size name }
            size = next((_signed(v) for n, _, v in fields(value) if n == 1), 0)  # type: ignore[arg-type]
            dims.append(size)
        elif number == 3 and value:
            return None
    return tuple(dims)


def parse_tensor(buf: memoryview) -> np.ndarray:
    """TensorProto -> numpy array: raw `tensor_content`, else the typed `*_val` list (one value fills the shape)."""
    dtype_enum, shape, content = 1, (), None
    values: list = []
    for number, wire, value in fields(buf):
        if number == 1:
            dtype_enum = int(value)  # type: ignore[arg-type]
        elif number == 2:
            shape = parse_shape(value)  # type: ignore[arg-type]
        elif number == 4:
            content = value
        elif number in _VALUE_FIELDS:
            values += _scalars(wire, value, _VALUE_FIELDS[number])
        elif number == 8:
            values.append(bytes(value))  # type: ignore[arg-type]
    if shape is None or any(d < 0 for d in shape):
        raise GraphDefError(f"constant tensor with unknown shape {shape}")
    count = int(np.prod(shape, dtype=np.int64))
    if dtype_enum == DT_STRING:
        arr = np.array(values, dtype=object)
        return arr.reshape(shape) if arr.size == count else np.full(shape, values[-1] if values else b"", object)
    if dtype_enum not in DTYPES:
        raise GraphDefError(f"unsupported tensor dtype enum {dtype_enum}")
    dtype = DTYPES[dtype_enum]
    if content is not None:
        if len(content) != count * dtype.itemsize:
            raise GraphDefError(f"tensor_content has {len(content)} bytes for shape {shape} of {dtype}")
        return np.frombuffer(content, dtype).reshape(shape).copy()
    if dtype_enum == 19:  # half_val holds the float16 bit patterns
        arr = np.array(values, np.uint16).view(np.float16)
    else:
        arr = np.array(values, dtype)
    if arr.size > count:
        raise GraphDefError(f"{arr.size} values for a tensor of shape {shape}")
    if arr.size < count:  # TF repeats the last value to fill the shape; no values means zeros
        pad = np.repeat(arr[-1:], count - arr.size) if arr.size else np.zeros(count, arr.dtype)
        arr = np.concatenate([arr, pad])
    return arr.reshape(shape)


AttrValue = Union[bytes, int, float, bool, tuple, np.ndarray, None, list]


def parse_attr(buf: memoryview) -> AttrValue:
    """AttrValue -> a Python value: s bytes, i int, f float, b bool, type int, shape tuple, tensor array, list list."""
    for number, wire, value in fields(buf):
        if number == 1:
            return _parse_list(value)  # type: ignore[arg-type]
        if number == 2:
            return bytes(value)  # type: ignore[arg-type]
        if number in (3, 6):
            return _signed(value)  # type: ignore[arg-type]
        if number == 4:
            return np.uint32(value).view("<f4").item()
        if number == 5:
            return bool(value)
        if number == 7:
            return parse_shape(value)  # type: ignore[arg-type]
        if number == 8:
            return parse_tensor(value)  # type: ignore[arg-type]
        if number == 9:
            return _text(value)
    return None  # func attributes and empty values: not needed for frozen inference graphs


def _parse_list(buf: memoryview) -> list:
    out: list = []
    for number, wire, value in fields(buf):
        if number == 2:
            out.append(bytes(value))  # type: ignore[arg-type]
        elif number in (3, 5, 6):
            out += _scalars(wire, value, "varint")
        elif number == 4:
            out += _scalars(wire, value, "f32")
        elif number == 7:
            out.append(parse_shape(value))  # type: ignore[arg-type]
        elif number == 8:
            out.append(parse_tensor(value))  # type: ignore[arg-type]
    return out


@dataclass
class Node:
    """One NodeDef: name, op, inputs (`name`, `name:1`, `^control`) and decoded attributes."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, AttrValue] = field(default_factory=dict)

    @property
    def value(self) -> np.ndarray:
        """The tensor of a Const node."""
        if self.op != "Const" or not isinstance(self.attrs.get("value"), np.ndarray):
            raise GraphDefError(f"node {self.name!r} ({self.op}) is not a constant tensor")
        return self.attrs["value"]  # type: ignore[return-value]


def parse_node(buf: memoryview) -> Node:
    node = Node("", "")
    for number, _, value in fields(buf):
        if number == 1:
            node.name = _text(value)
        elif number == 2:
            node.op = _text(value)
        elif number == 3:
            node.inputs.append(_text(value))
        elif number == 5:  # map<string, AttrValue> entry: key 1, value 2
            key, attr = "", None
            for n, _, v in fields(value):  # type: ignore[arg-type]
                if n == 1:
                    key = _text(v)
                elif n == 2:
                    attr = parse_attr(v)  # type: ignore[arg-type]
            node.attrs[key] = attr
    if not node.name or not node.op:
        raise GraphDefError("a node without a name or op")
    return node


def parse_graphdef(data: bytes | memoryview) -> dict[str, Node]:
    """Nodes of a serialised GraphDef by name, in file order. Raises GraphDefError on anything else."""
    buf = memoryview(data)
    nodes: dict[str, Node] = {}
    try:
        for number, wire, value in fields(buf):
            if number == 1:
                if wire != 2:
                    raise GraphDefError("field 1 (node) is not a message")
                node = parse_node(value)  # type: ignore[arg-type]
                nodes[node.name] = node
            # 2 library, 3 version, 4 versions: not needed
    except (ValueError, TypeError, IndexError, OverflowError) as exc:  # bytes that decode to nonsense
        raise GraphDefError(f"malformed GraphDef ({type(exc).__name__}: {exc})") from exc
    if not nodes:
        raise GraphDefError("no nodes found")
    return nodes


def read_graphdef(path: str | Path) -> dict[str, Node]:
    """Nodes of the frozen graph at `path`, with the file named in any error."""
    path = Path(path)
    try:
        return parse_graphdef(path.read_bytes())
    except GraphDefError as exc:
        raise GraphDefError(f"{path} is not a TensorFlow GraphDef (.pb frozen graph): {exc}") from exc


def constants(nodes: dict[str, Node]) -> dict[str, np.ndarray]:
    """Every Const node's tensor by node name."""
    return {name: n.value for name, n in nodes.items() if n.op == "Const"}
