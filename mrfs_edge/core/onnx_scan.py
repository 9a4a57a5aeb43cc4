"""What an ONNX file holds, read from its protobuf bytes without the onnx package (torch/onnx-free).

The target commands must decide whether a graph is already prepared (Q/DQ nodes: calibrated;
FP16 initializers: the FP16 graph with its FP32 pins in the types) on a Jetson, where only the
core install exists. Only the few fields needed are decoded (ModelProto.graph = 7,
metadata_props = 14; GraphProto.node = 1, initializer = 5; NodeProto.op_type = 4;
TensorProto.data_type = 2); everything else is skipped by its length.
"""
from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, Set, Tuple, Union

from mrfs_edge.core.errors import ModelFileError

FLOAT16 = 10  # onnx.TensorProto.FLOAT16
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

_Field = Tuple[int, int, Union[int, memoryview]]


@dataclass(frozen=True)
class OnnxScan:
    """Node op types, initializer element types and metadata of one ONNX file."""

    op_types: FrozenSet[str]
    initializer_types: FrozenSet[int]
    metadata: Dict[str, str] = field(default_factory=dict)
    node_count: int = 0   # top-level nodes: tells a graph from another that copied its metadata

    @property
    def has_qdq(self) -> bool:
        return bool(self.op_types & QDQ_OPS)

    @property
    def is_fp16(self) -> bool:
        """Float16 weights: the graph already carries FP16 types (convert_to_fp16's output)."""
        return FLOAT16 in self.initializer_types

# Suffixes this toolkit gives graphs derived from an FP32 export: <stem>.int8.onnx, <stem>.fp16.onnx.
DERIVED_SUFFIXES = (".int8", ".fp16")


def export_stem(onnx_name: str) -> str:
    """``m.onnx`` / ``m.int8.onnx`` / ``m.fp16.onnx`` → ``m``: the FP32 export a graph was made from.

    (str.removesuffix is 3.9+; JetPack 5 runs 3.8.)
    """
    stem = onnx_name[:-len(".onnx")] if onnx_name.endswith(".onnx") else onnx_name
    for suffix in DERIVED_SUFFIXES:
        stem = stem[:-len(suffix)] if stem.endswith(suffix) else stem
    return stem


def _varint(data: memoryview, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: Union[int, memoryview]) -> Iterator[_Field]:
    """``(field number, wire type, value)`` of a message; length-delimited values are views, not copies."""
    if not isinstance(data, memoryview):
        raise ValueError("a varint where a message was expected")
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("length past the end")
            yield number, wire, data[pos:pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
    if pos != end:
        raise ValueError("truncated field")


def _text(value: Union[int, memoryview]) -> str:
    return bytes(value).decode("utf-8") if isinstance(value, memoryview) else ""


def _scan(data: memoryview) -> OnnxScan:
    op_types: Set[str] = set()
    init_types: Set[int] = set()
    metadata: Dict[str, str] = {}
    node_count = 0
    for number, wire, value in _fields(data):
        if number == 7 and wire == 2:
            for g_number, g_wire, g_value in _fields(value):
                if g_wire != 2:
                    continue
                if g_number == 1:
                    node_count += 1
                    op_types.update(_text(v) for n, w, v in _fields(g_value) if n == 4 and w == 2)
                elif g_number == 5:
                    init_types.update(v for n, w, v in _fields(g_value) if n == 2 and isinstance(v, int))
        elif number == 14 and wire == 2:
            entry = {n: _text(v) for n, w, v in _fields(value) if w == 2}
            metadata[entry.get(1, "")] = entry.get(2, "")
    return OnnxScan(frozenset(op_types), frozenset(init_types), metadata, node_count)


def scan_onnx(path: Union[str, "os.PathLike[str]"]) -> OnnxScan:
    """Read ``path``'s node types, initializer types and metadata; one-line error if it is no ONNX."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: empty file, not an ONNX model")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            return _scan(view)
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            # Raised after the map is closed: the exception's frames hold views into it, and
            # closing a map with views alive is a BufferError instead of this one-line error.
            problem = str(exc)
        finally:
            view.release()
    raise ModelFileError(f"{path}: not a readable ONNX protobuf ({problem})")


# What a file starts with when it is a PyTorch checkpoint: a zip archive (torch.save since 1.6) or a pickle.
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def check_onnx_model(path: Union[str, "os.PathLike[str]"], flag: str) -> OnnxScan:
    """``path``'s scan if it is an ONNX model with a graph, else a one-line error naming ``flag``.

    Commands call it on their ONNX argument before any other work, so a checkpoint, a truncated
    download or any other file fails in a second, before an output folder is made or a model loaded.
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(CHECKPOINT_MAGIC):
        raise ModelFileError(f"{flag} {path}: a PyTorch checkpoint, not an ONNX model (pass it as --checkpoint)")
    try:
        scan = scan_onnx(path)
    except ModelFileError as exc:
        raise ModelFileError(f"{flag} {exc}") from None
    if not scan.op_types:
        raise ModelFileError(f"{flag} {path}: not an ONNX model (no graph nodes in it)")
    return scan
