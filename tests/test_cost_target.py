"""The target side of the cost figures, torch- and onnx-free: the split read back from an ONNX
file's metadata, the floors per Jetson and the summary lines (core install, Python 3.8+).

The ONNX files are protobuf bytes written by hand (a graph with nodes of given op types and
the metadata entries), so no onnx package is needed.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mrfs_edge.metrics.cost import COST_KEY, PrecisionSplit, cost_of_onnx, engine_split, read_cost
from mrfs_edge.metrics.jetson_floor import FLOOR_LABEL, JETSONS, UNKNOWN_COST, floors, summary_lines

SPLIT = PrecisionSplit({"weighted": {"int8": 12_810_000_000, "fp16": 0, "fp32": 5_080_000_000},
                        "attention": {"int8": 0, "fp16": 0, "fp32": 5_710_000_000}},
                       {"activation": {"int8": 600_000_000, "fp16": 0, "fp32": 4_760_000_000, "other": 0},
                        "boundary": {"int8": 200_000_000, "fp16": 0, "fp32": 1_190_000_000, "other": 0},
                        "weight": {"int8": 10_000_000, "fp16": 0, "fp32": 1_200_000, "other": 0}},
                       has_qdq=True, nodes=3)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _onnx_bytes(op_types: list[str], metadata: dict[str, str]) -> bytes:
    """ModelProto{graph(7){node(1){op_type(4)}...}, metadata_props(14){key(1), value(2)}...}."""
    graph = b"".join(_field(1, _field(4, op.encode())) for op in op_types)
    entries = b"".join(_field(14, _field(1, k.encode()) + _field(2, v.encode())) for k, v in metadata.items())
    return _field(7, graph) + entries


def _write(tmp_path: Path, name: str, op_types: list[str], metadata: dict[str, str]) -> Path:
    path = tmp_path / name
    path.write_bytes(_onnx_bytes(op_types, metadata))
    return path


QDQ_OPS = ["QuantizeLinear", "DequantizeLinear", "Conv"]      # the three nodes SPLIT was counted on


def test_the_split_stored_in_the_metadata_reads_back_without_onnx(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    path = _write(tmp_path, "m.int8.onnx", QDQ_OPS, {COST_KEY: SPLIT.to_json(), "other": "x"})
    assert read_cost(path) == SPLIT
    assert cost_of_onnx(path) == SPLIT
    bare = _write(tmp_path, "bare.onnx", ["Conv"], {"other": "x"})
    assert read_cost(bare) is None and cost_of_onnx(bare) is None     # no metadata, no onnx to count it


def test_a_stale_or_foreign_entry_is_not_believed(tmp_path: Path) -> None:
    # The Q/DQ graph's split copied into a graph without Q/DQ nodes, or into another Q/DQ graph
    # (the fully quantised graph's into the mixed-precision one: fewer Q/DQ pairs, fewer nodes).
    assert read_cost(_write(tmp_path, "a.onnx", ["Conv"], {COST_KEY: SPLIT.to_json()})) is None
    assert read_cost(_write(tmp_path, "a2.onnx", [*QDQ_OPS, "Conv"], {COST_KEY: SPLIT.to_json()})) is None
    newer = SPLIT.to_json().replace('"v":1', '"v":99')
    assert read_cost(_write(tmp_path, "b.onnx", QDQ_OPS, {COST_KEY: newer})) is None
    assert read_cost(_write(tmp_path, "c.onnx", QDQ_OPS, {COST_KEY: "{not json"})) is None
    with pytest.raises(ValueError, match="version 99"):
        PrecisionSplit.from_json(newer)


def test_split_figures() -> None:
    assert SPLIT.total_gmacs == pytest.approx(23.6)
    assert SPLIT.weighted_int8_fraction == pytest.approx(12.81 / 17.89)
    assert SPLIT.int8_fraction == pytest.approx(12.81 / 23.6)
    assert (SPLIT.activation_bytes, SPLIT.boundary_bytes, SPLIT.weight_bytes) == (5_360_000_000, 1_390_000_000,
                                                                                 11_200_000)


def test_an_fp16_or_best_engine_runs_the_fp32_part_in_fp16() -> None:
    best = engine_split(SPLIT, "best")
    assert best.macs["weighted"] == {"int8": 12_810_000_000, "fp16": 5_080_000_000, "fp32": 0}
    assert best.bytes["boundary"] == {"int8": 200_000_000, "fp16": 595_000_000, "fp32": 0, "other": 0}
    assert engine_split(SPLIT, "int8") == SPLIT and engine_split(SPLIT, "fp32") == SPLIT


def test_implicit_int8_from_a_graph_without_qdq_takes_every_matrix_op_as_int8() -> None:
    fp32 = replace(SPLIT, macs={"weighted": {"int8": 0, "fp16": 0, "fp32": 17_890_000_000},
                                "attention": {"int8": 0, "fp16": 0, "fp32": 5_710_000_000}}, has_qdq=False)
    implicit = engine_split(fp32, "int8")
    assert implicit.macs["weighted"] == {"int8": 17_890_000_000, "fp16": 0, "fp32": 0}
    assert implicit.bytes == fp32.bytes                           # tensors stay as the graph stores them
    assert engine_split(fp32, "best").bytes == fp32.fp16_fallback().bytes
    assert engine_split(fp32, "fp32") == fp32


def test_floors_per_jetson_and_the_summary_lines() -> None:
    by_name = {f.jetson: f for f in floors(SPLIT)}
    nano = by_name["Orin Nano 8GB"]
    # 2 × 12.81e9 / 20e12 + 2 × 10.79e9 / 1.28e12 s; (1.39e9 + 11.2e6) B / 68e9 B/s.
    assert nano.compute_ms == pytest.approx(1e3 * (2 * 12.81e9 / 20e12 + 2 * 10.79e9 / 1.28e12))
    assert nano.memory_ms == pytest.approx(1e3 * 1.4012e9 / 68e9)
    assert nano.floor_ms == max(nano.compute_ms, nano.memory_ms)
    assert [f.jetson for f in floors(SPLIT)] == [j.name for j in JETSONS]
    assert by_name["AGX Orin 64GB"].floor_ms < by_name["Orin NX 16GB"].floor_ms < nano.floor_ms
    cost, floor_line = summary_lines(SPLIT)
    assert "INT8 12.81 / FP16 0.00 / FP32 10.79" in cost and "71.6% of weighted MACs in INT8" in cost
    assert floor_line.startswith(FLOOR_LABEL + ": Orin Nano 8GB ")
    assert f"Orin Nano 8GB {nano.floor_ms:.1f} ms ({nano.bound})" in floor_line
    assert summary_lines(None) == [UNKNOWN_COST]
