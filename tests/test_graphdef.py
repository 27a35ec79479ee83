"""The GraphDef reader on hand-encoded graphs: names, ops, inputs, attributes, constant tensors, errors.

The graphs are written here with a minimal protobuf wire-format writer, so the
reader is checked against the format itself, not against its own output.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from fewshot_core.embed.convert512 import convert_facenet512_nodes
from fewshot_core.embed.graphdef import GraphDefError, constants, parse_graphdef, read_graphdef
from fewshot_core.errors import FewShotError, WeightsMismatchError


# --- a minimal protobuf writer -------------------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 values are sent as 10-byte two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def vi(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(n)


def ld(field: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(field << 3 | 2) + varint(len(data)) + data


def f32(field: int, x: float) -> bytes:
    return varint(field << 3 | 5) + struct.pack("<f", x)


def shape(*dims: int) -> bytes:
    return b"".join(ld(2, vi(1, d)) for d in dims)


def tensor(dtype: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return vi(1, dtype) + ld(2, shape(*dims)) + body


def attr(key: str, value: bytes) -> bytes:
    return ld(5, ld(1, key) + ld(2, value))


def node(name: str, op: str, inputs: tuple[str, ...] = (), attrs: bytes = b"") -> bytes:
    return ld(1, ld(1, name) + ld(2, op) + b"".join(ld(3, i) for i in inputs) + attrs)


WEIGHTS = np.arange(6, dtype="<f4").reshape(2, 3) - 2.5

GRAPH = b"".join([
    vi(3, 26),  # the deprecated `version` field: skipped
    node("input", "Placeholder", attrs=attr("dtype", vi(6, 1)) + attr("shape", ld(7, shape(1, 4, 4, 3)))),
    node("w", "Const", attrs=attr("dtype", vi(6, 1)) + attr("value", ld(8, tensor(1, (2, 3), ld(4, WEIGHTS.tobytes()))))),
    # one float_val fills the whole shape (TF's rule)
    node("fill", "Const", attrs=attr("value", ld(8, tensor(1, (4,), ld(5, struct.pack("<f", 0.25)))))),
    # int_val unpacked (one varint per value), negative values included
    node("ints", "Const", attrs=attr("value", ld(8, tensor(3, (3,), vi(7, -1) + vi(7, 7) + vi(7, -300))))),
    # int_val packed, as proto3 writers do
    node("shape", "Const", attrs=attr("value", ld(8, tensor(3, (2,), ld(7, varint(1) + varint(-1 & (2**64 - 1))))))),
    node("scalar", "Const", attrs=attr("value", ld(8, vi(1, 1) + ld(2, b"") + f32(5, 0.17)))),
    node("conv", "Conv2D", ("input:0", "w", "^fill"),
         attr("strides", ld(1, ld(3, varint(1) + varint(2) + varint(2) + varint(1))))
         + attr("padding", ld(2, "SAME")) + attr("T", vi(6, 1))
         + attr("epsilon", f32(4, 0.001)) + attr("is_training", vi(5, 0))),
    ld(4, vi(1, 26)),  # versions { producer }: skipped
])


def test_nodes_names_ops_inputs_and_attributes():
    nodes = parse_graphdef(GRAPH)
    assert list(nodes) == ["input", "w", "fill", "ints", "shape", "scalar", "conv"]
    assert [n.op for n in nodes.values()] == ["Placeholder"] + ["Const"] * 5 + ["Conv2D"]
    conv = nodes["conv"]
    assert conv.inputs == ["input:0", "w", "^fill"]
    assert conv.attrs["strides"] == [1, 2, 2, 1] and conv.attrs["padding"] == b"SAME" and conv.attrs["T"] == 1
    assert conv.attrs["epsilon"] == pytest.approx(0.001) and conv.attrs["is_training"] is False
    assert nodes["input"].attrs["shape"] == (1, 4, 4, 3) and nodes["input"].attrs["dtype"] == 1


def test_const_tensors_decode_to_numpy():
    consts = constants(parse_graphdef(GRAPH))
    assert set(consts) == {"w", "fill", "ints", "shape", "scalar"}
    np.testing.assert_array_equal(consts["w"], WEIGHTS)
    assert consts["w"].dtype == np.float32 and consts["w"].flags.writeable
    np.testing.assert_array_equal(consts["fill"], np.full(4, 0.25, np.float32))
    np.testing.assert_array_equal(consts["ints"], [-1, 7, -300])
    assert consts["ints"].dtype == np.int32
    np.testing.assert_array_equal(consts["shape"], [1, -1])
    assert consts["scalar"].shape == () and float(consts["scalar"]) == pytest.approx(0.17)


def test_a_non_constant_has_no_value():
    with pytest.raises(GraphDefError, match="not a constant"):
        _ = parse_graphdef(GRAPH)["conv"].value


@pytest.mark.parametrize("data", [
    b"",  # no nodes
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",  # a JPEG header
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    GRAPH[:-40],  # truncated
    b"just some text, not a graph at all",
])
def test_bytes_that_are_not_a_graphdef_raise_a_clear_error(data):
    with pytest.raises(GraphDefError) as info:
        parse_graphdef(data)
    assert isinstance(info.value, WeightsMismatchError) and isinstance(info.value, FewShotError)


def test_reading_a_wrong_file_names_it(tmp_path):
    path = tmp_path / "graph_final.pb"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a frozen graph")
    with pytest.raises(GraphDefError, match="graph_final.pb is not a TensorFlow GraphDef"):
        read_graphdef(path)


def test_a_graph_that_is_not_facenet_is_refused():
    with pytest.raises(WeightsMismatchError, match="do not match Inception-ResNet-v1"):
        convert_facenet512_nodes(parse_graphdef(GRAPH), "tiny graph")
