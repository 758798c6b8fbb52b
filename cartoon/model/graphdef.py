"""A reader for TensorFlow's frozen GraphDef files, without TensorFlow.

Reads the protobuf wire format directly, only the messages a frozen inference graph
uses (GraphDef -> NodeDef -> AttrValue -> TensorProto / TensorShapeProto), with the
field numbers of TensorFlow's ``graph.proto``, ``node_def.proto``, ``attr_value.proto``,
``tensor.proto`` and ``tensor_shape.proto``. Nothing is executed or unpickled; a file
that does not parse raises ``GraphDefError`` naming the byte offset.
"""

import struct
from dataclasses import dataclass, field

import numpy as np

# DataType enum values (types.proto) and the numpy types they hold.
DT_FLOAT, DT_INT32, DT_UINT8, DT_INT64 = 1, 3, 4, 9
NUMPY_TYPES = {DT_FLOAT: np.float32, 2: np.float64, DT_INT32: np.int32, DT_UINT8: np.uint8, DT_INT64: np.int64}
TYPE_NAMES = {DT_FLOAT: "float32", 2: "float64", DT_INT32: "int32", DT_UINT8: "uint8", DT_INT64: "int64", 10: "bool"}

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class GraphDefError(ValueError):
    """The bytes are not a well-formed GraphDef."""


@dataclass
class Node:
    """One NodeDef: its name, op, inputs and the attributes a frozen graph uses."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, object] = field(default_factory=dict)


def _fields(data: bytes, start: int = 0, end: int | None = None):
    """Yields (field number, wire type, value, offset) over one message's bytes."""
    end = len(data) if end is None else end
    position = start
    while position < end:
        offset = position
        key, position = _varint(data, position, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise GraphDefError(f"field number 0 at byte {offset}")
        if wire == VARINT:
            value, position = _varint(data, position, end)
        elif wire == FIXED64:
            if position + 8 > end:
                raise GraphDefError(f"truncated 64-bit field at byte {offset}")
            value, position = data[position : position + 8], position + 8
        elif wire == LENGTH:
            length, position = _varint(data, position, end)
            if position + length > end:
                raise GraphDefError(f"field {number} at byte {offset} runs {position + length - end} bytes past its end")
            value, position = (position, position + length), position + length
        elif wire == FIXED32:
            if position + 4 > end:
                raise GraphDefError(f"truncated 32-bit field at byte {offset}")
            value, position = data[position : position + 4], position + 4
        else:
            raise GraphDefError(f"unsupported wire type {wire} at byte {offset}")
        yield number, wire, value, offset


def _varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= end:
            raise GraphDefError(f"truncated varint at byte {position}")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise GraphDefError(f"varint longer than 10 bytes at byte {position}")


def _text(data: bytes, span: tuple[int, int], what: str) -> str:
    try:
        return data[span[0] : span[1]].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GraphDefError(f"{what} at byte {span[0]} is not UTF-8") from exc


def _packed(data: bytes, wire: int, value, fmt: str, size: int) -> list:
    """Repeated scalars: packed (one length-delimited run) or one per field."""
    if wire == LENGTH:
        raw = data[value[0] : value[1]]
        if len(raw) % size:
            raise GraphDefError("packed field length is not a multiple of its element size")
        return list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))
    return [struct.unpack(f"<{fmt}", value)[0]]


def _varints(data: bytes, wire: int, value) -> list[int]:
    if wire == LENGTH:
        values, position = [], value[0]
        while position < value[1]:
            number, position = _varint(data, position, value[1])
            values.append(number)
        return values
    return [value]


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(data: bytes, span: tuple[int, int]) -> tuple[int, ...] | None:
    """TensorShapeProto: dims (-1 unknown) or None for unknown rank."""
    dims, unknown_rank = [], False
    for number, _, value, _ in _fields(data, *span):
        if number == 2:  # Dim {size = 1, name = 2}
            size = 0
            for dim_number, _, dim_value, _ in _fields(data, *value):
                if dim_number == 1:
                    size = _signed(dim_value)
            dims.append(size)
        elif number == 3:
            unknown_rank = bool(value)
    return None if unknown_rank else tuple(dims)


def _tensor(data: bytes, span: tuple[int, int]) -> np.ndarray:
    """TensorProto to a numpy array (float, double, int32, int64, uint8)."""
    dtype, shape, content = 0, (), None
    values: list = []
    for number, wire, value, offset in _fields(data, *span):
        if number == 1:
            dtype = value
        elif number == 2:
            shape = _shape(data, value) or ()
        elif number == 4:
            content = data[value[0] : value[1]]
        elif number == 5:
            values += _packed(data, wire, value, "f", 4)
        elif number == 6:
            values += _packed(data, wire, value, "d", 8)
        elif number == 7:
            values += [_signed(v) for v in _varints(data, wire, value)]
        elif number == 10:
            values += [_signed(v) for v in _varints(data, wire, value)]
    if dtype not in NUMPY_TYPES:
        raise GraphDefError(f"tensor of unsupported type {TYPE_NAMES.get(dtype, dtype)}")
    numpy_type = np.dtype(NUMPY_TYPES[dtype]).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        if len(content) != count * numpy_type.itemsize:
            raise GraphDefError(f"tensor content of {len(content)} bytes does not fill shape {shape}")
        return np.frombuffer(content, numpy_type).astype(NUMPY_TYPES[dtype]).reshape(shape)
    if not values:
        return np.zeros(shape, NUMPY_TYPES[dtype])
    array = np.array(values, NUMPY_TYPES[dtype])
    if len(array) == count:
        return array.reshape(shape)
    if len(array) < count:  # TensorFlow stores a run of equal trailing values once
        return np.concatenate([array, np.full(count - len(array), array[-1], array.dtype)]).reshape(shape)
    raise GraphDefError(f"tensor has {len(array)} values for shape {shape}")


def _attr(data: bytes, span: tuple[int, int]) -> object:
    """AttrValue: the one value it holds (a list for ``list``)."""
    result: object = None
    for number, wire, value, _ in _fields(data, *span):
        if number == 1:  # ListValue
            items: list = []
            for list_number, list_wire, list_value, _ in _fields(data, *value):
                if list_number == 2:
                    items.append(data[list_value[0] : list_value[1]])
                elif list_number == 3:
                    items += [_signed(v) for v in _varints(data, list_wire, list_value)]
                elif list_number == 4:
                    items += _packed(data, list_wire, list_value, "f", 4)
                elif list_number == 6:
                    items += _varints(data, list_wire, list_value)
                elif list_number == 7:
                    items.append(_shape(data, list_value))
            result = items
        elif number == 2:
            result = data[value[0] : value[1]]
        elif number == 3:
            result = _signed(value)
        elif number == 4:
            result = struct.unpack("<f", value)[0]
        elif number == 5:
            result = bool(value)
        elif number == 6:
            result = ("type", value)
        elif number == 7:
            result = ("shape", _shape(data, value))
        elif number == 8:
            result = _tensor(data, value)
    return result


def _node(data: bytes, span: tuple[int, int]) -> Node:
    node = Node(name="", op="")
    for number, wire, value, offset in _fields(data, *span):
        if wire != LENGTH:
            continue
        if number == 1:
            node.name = _text(data, value, "node name")
        elif number == 2:
            node.op = _text(data, value, "op name")
        elif number == 3:
            node.inputs.append(_text(data, value, "node input"))
        elif number == 5:  # map<string, AttrValue> entry {key = 1, value = 2}
            key, attr_value = None, None
            for entry_number, entry_wire, entry_value, _ in _fields(data, *value):
                if entry_number == 1 and entry_wire == LENGTH:
                    key = _text(data, entry_value, "attribute name")
                elif entry_number == 2 and entry_wire == LENGTH:
                    attr_value = _attr(data, entry_value)
            if key is not None:
                node.attrs[key] = attr_value
    if not node.name or not node.op:
        raise GraphDefError(f"node at byte {span[0]} has no name or no op")
    return node


def parse_graphdef(data: bytes) -> dict[str, Node]:
    """Parses a serialised GraphDef into its nodes, by name.

    Raises:
        GraphDefError: the bytes are truncated, not protobuf, or hold no nodes.
    """
    nodes: dict[str, Node] = {}
    for number, wire, value, offset in _fields(data):
        if number == 1:
            if wire != LENGTH:
                raise GraphDefError(f"field 1 at byte {offset} is not a message")
            node = _node(data, value)
            if node.name in nodes:
                raise GraphDefError(f"two nodes are named {node.name!r}")
            nodes[node.name] = node
        elif number not in (2, 3, 4):  # library, version (deprecated), versions
            raise GraphDefError(f"unexpected field {number} at byte {offset}: not a GraphDef")
    if not nodes:
        raise GraphDefError("no nodes: not a GraphDef")
    return nodes
