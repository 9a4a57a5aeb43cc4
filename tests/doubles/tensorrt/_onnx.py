"""Just enough of ONNX's protobuf to parse a model without the onnx package (JetPack has none).

Field numbers are onnx.proto3's: ModelProto.graph=7; GraphProto node=1, initializer=5, input=11,
output=12; NodeProto input=1, output=2, name=3, op_type=4; ValueInfoProto name=1, type=2;
TypeProto.tensor_type=1; Tensor elem_type=1, shape=2; TensorShapeProto.dim=1; Dimension
dim_value=1, dim_param=2; TensorProto dims=1, data_type=2, name=8.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, NamedTuple, Tuple, Union

Dim = Union[int, str]


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Iterator[Tuple[int, Union[int, bytes]]]:
    """(field number, value) pairs; length-delimited values as bytes, varints as int."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            yield number, data[pos:pos + size]
            pos += size
        elif wire == 1:
            yield number, data[pos:pos + 8]
            pos += 8
        elif wire == 5:
            yield number, data[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


class Node(NamedTuple):
    name: str
    op_type: str
    inputs: List[str]
    outputs: List[str]
    ints: Dict[str, int]    # integer attributes (Cast's "to"); AttributeProto name=1, i=3


class Value(NamedTuple):
    name: str
    elem_type: int          # TensorProto.DataType: 1 float, 10 float16, 6 int32, 7 int64, 3 int8, 9 bool
    shape: List[Dim]        # int, or the dim_param name ("" when neither is set)


class Graph(NamedTuple):
    nodes: List[Node]
    inputs: List[Value]
    outputs: List[Value]
    initializers: Dict[str, int]   # name -> data_type


def _value(data: bytes) -> Value:
    name, elem, shape = "", 0, []
    for number, value in fields(data):
        if number == 1:
            name = bytes(value).decode()
        elif number == 2:
            for n1, tensor in fields(bytes(value)):
                if n1 != 1:
                    continue
                for n2, part in fields(bytes(tensor)):
                    if n2 == 1:
                        elem = int(part)  # type: ignore[arg-type]
                    elif n2 == 2:
                        for n3, dim in fields(bytes(part)):
                            if n3 == 1:
                                entry: Dim = ""
                                for n4, d in fields(bytes(dim)):
                                    entry = int(d) if n4 == 1 else bytes(d).decode() if n4 == 2 else entry  # type: ignore[arg-type]
                                shape.append(entry)
    return Value(name, elem, shape)


def read_graph(model: bytes) -> Graph:
    graph = next((bytes(v) for n, v in fields(model) if n == 7), b"")
    nodes, inputs, outputs, inits = [], [], [], {}
    for number, value in fields(graph):
        value = bytes(value) if not isinstance(value, int) else value
        if number == 1:
            ins, outs, name, op, ints = [], [], "", "", {}
            for n, v in fields(value):  # type: ignore[arg-type]
                if n == 1:
                    ins.append(bytes(v).decode())
                elif n == 2:
                    outs.append(bytes(v).decode())
                elif n == 3:
                    name = bytes(v).decode()
                elif n == 4:
                    op = bytes(v).decode()
                elif n == 5:
                    attr = dict(fields(bytes(v)))
                    if 3 in attr and 1 in attr:
                        ints[bytes(attr[1]).decode()] = int(attr[3])  # type: ignore[arg-type]
            nodes.append(Node(name, op, ins, outs, ints))
        elif number == 5:
            name, dtype = "", 0
            for n, v in fields(value):  # type: ignore[arg-type]
                if n == 8:
                    name = bytes(v).decode()
                elif n == 2:
                    dtype = int(v)  # type: ignore[arg-type]
            inits[name] = dtype
        elif number == 11:
            inputs.append(_value(value))  # type: ignore[arg-type]
        elif number == 12:
            outputs.append(_value(value))  # type: ignore[arg-type]
    inputs = [v for v in inputs if v.name not in inits]
    return Graph(nodes, inputs, outputs, inits)
