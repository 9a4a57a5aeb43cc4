"""The MAC counter, the INT8/FP16/FP32 split, the bytes per frame, the metadata and the Jetson floors.

Graphs are built by hand so every figure can be worked out on paper; the assertions state the
arithmetic. Needs onnx (the workstation side); the target side's reading is checked in a
subprocess that has onnx and torch blocked.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from fake_tensorrt import make_tiny_onnx, tiny_contract
from onnx import TensorProto, helper, numpy_helper

from mrfs_edge.bench import report as bench_report
from mrfs_edge.bench.modes import MODES
from mrfs_edge.metrics.cost import (
    COST_KEY,
    PrecisionSplit,
    engine_split,
    graph_costs,
    node_macs,
    precision_split,
    read_cost,
    set_cost_metadata,
)
from mrfs_edge.metrics.jetson_floor import FLOOR_LABEL, JETSONS, UNKNOWN_COST, Jetson, cost_record, floor, summary_lines

RNG = np.random.default_rng(0)


def _init(name: str, shape: tuple[int, ...], dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.normal(size=shape).astype(dtype), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _arithmetic_graph() -> onnx.ModelProto:
    """x 1×3×16×16 → conv 3→8 3×3 pad 1 → depthwise 3×3 stride 2 → transposed conv 8→4 2×2 stride 2;
    tokens 1×64×8 → MatMul by an 8×16 weight, attention tokens·tokensᵀ; Gemm 1×8 · (8×5)ᵀ."""
    inits = [_init("cw", (8, 3, 3, 3)), _init("dw", (8, 1, 3, 3)), _init("tw", (8, 4, 2, 2)), _init("mw", (8, 16)),
             _init("gw", (5, 8)), numpy_helper.from_array(np.array([1, 8, 64], np.int64), "shape"),
             numpy_helper.from_array(np.array([1, 8], np.int64), "vec")]
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "dw"], ["c2"], name="depthwise", group=8, strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["c2", "tw"], ["up"], name="deconv", strides=[2, 2]),
             helper.make_node("Reshape", ["c2", "shape"], ["r"], name="tokens_t"),
             helper.make_node("Transpose", ["r"], ["t"], name="tokens", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "mw"], ["m"], name="linear"),
             helper.make_node("MatMul", ["t", "r"], ["a"], name="attention"),
             helper.make_node("ReduceMean", ["c2"], ["pooled"], name="pool", axes=[2, 3], keepdims=0),
             helper.make_node("Reshape", ["pooled", "vec"], ["p"], name="flat"),
             helper.make_node("Gemm", ["p", "gw"], ["g"], name="fc", transB=1)]
    return _model(nodes, [("x", [1, 3, 16, 16])], ["up", "m", "a", "g"], inits)


def test_macs_of_a_hand_built_graph_equal_the_arithmetic():
    costs = {c.name: c for c in graph_costs(_arithmetic_graph())}
    expected = {
        "conv": (8 * 16 * 16) * (3 * 3 * 3),        # every output × in_channels × kh × kw
        "depthwise": (8 * 8 * 8) * (1 * 3 * 3),     # groups = channels: one input channel per output
        "deconv": (8 * 8 * 8) * (4 * 2 * 2),        # every input element × out_channels × kh × kw
        "linear": (64 * 16) * 8,                    # 1×64×8 · 8×16
        "attention": (64 * 64) * 8,                 # 1×64×8 · 1×8×64
        "fc": 5 * 8,                                # 1×8 · (5×8)ᵀ
    }
    assert {name: c.macs for name, c in costs.items()} == expected
    assert {name for name, c in costs.items() if c.kind == "attention"} == {"attention"}
    assert {c.precision for c in costs.values()} == {"fp32"}
    assert costs["conv"].output_bytes == 8 * 16 * 16 * 4
    assert node_macs(_arithmetic_graph()) == expected


def test_a_dynamic_axis_is_left_out_and_counted():
    model = _arithmetic_graph()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    split = precision_split(model)
    assert split.unresolved > 0
    assert split.total_gmacs < sum(node_macs(_arithmetic_graph()).values()) / 1e9


def _qdq_graph() -> onnx.ModelProto:
    """x 1×3×4×4 quantised once; four 1×1 convs 3→8 (384 MACs each):
    int8_dq: int8 weight + DequantizeLinear (ONNX Runtime's weight form) and quantised input → INT8;
    int8_qdq: float weight behind QuantizeLinear → DequantizeLinear (folded by TensorRT) → INT8;
    float_weight: quantised input but a float weight → TensorRT runs it in float → FP32;
    plain: float input and weight → FP32."""
    inits = [numpy_helper.from_array(RNG.integers(-5, 5, size=(8, 3, 1, 1)).astype(np.int8), "wq"),
             numpy_helper.from_array(np.full(8, 0.1, np.float32), "ws"), _init("wf", (8, 3, 1, 1)),
             _init("wf2", (8, 3, 1, 1)), numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"), numpy_helper.from_array(np.zeros(8, np.int8), "z8")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq"),
             helper.make_node("DequantizeLinear", ["wq", "ws", "z8"], ["w_int8"], name="wdq", axis=0),
             helper.make_node("QuantizeLinear", ["wf2", "ws", "z8"], ["wf2q"], name="wq2", axis=0),
             helper.make_node("DequantizeLinear", ["wf2q", "ws", "z8"], ["wf2dq"], name="wdq2", axis=0),
             helper.make_node("Conv", ["xdq", "w_int8"], ["y1"], name="int8_dq"),
             helper.make_node("Conv", ["xdq", "wf2dq"], ["y2"], name="int8_qdq"),
             helper.make_node("Conv", ["xdq", "wf"], ["y3"], name="float_weight"),
             helper.make_node("Conv", ["x", "wf"], ["y4"], name="plain")]
    return _model(nodes, [("x", [1, 3, 4, 4])], ["y1", "y2", "y3", "y4"], inits)


def test_int8_is_what_reads_both_operands_through_dequantizelinear():
    model = _qdq_graph()
    precisions = {c.name: c.precision for c in graph_costs(model)}
    assert precisions == {"int8_dq": "int8", "int8_qdq": "int8", "float_weight": "fp32", "plain": "fp32"}
    split = precision_split(model)
    assert split.macs["weighted"] == {"int8": 2 * 384, "fp16": 0, "fp32": 2 * 384}
    assert split.weighted_int8_fraction == pytest.approx(0.5)
    assert split.has_qdq and not split.is_fp16


def test_bytes_of_a_qdq_graph_at_their_stored_precision():
    split = precision_split(_qdq_graph())
    x, xq, y = 3 * 16 * 4, 3 * 16 * 1, 8 * 16 * 4     # float input, its int8 copy, each float output
    # x: written once, read by Q and by plain; xq: read through the DQ by three convs; outputs: written + read out.
    assert split.bytes["activation"] == {"int8": xq * (1 + 3), "fp16": 0, "fp32": x * 3 + 4 * y * 2, "other": 0}
    # Boundary: graph input and outputs once, each conv reads its data input (int8 behind the DQ) and writes.
    assert split.bytes["boundary"] == {"int8": 3 * xq, "fp16": 0, "fp32": x + x + 4 * y + 4 * y, "other": 0}
    # Weights as the engine holds them: wq int8, wf2 folded to int8 behind its QuantizeLinear, wf float.
    assert split.bytes["weight"]["int8"] == 24 + 24 + 1 + 8
    assert split.bytes["weight"]["fp32"] == 24 * 4 + 8 * 4 + 4


def test_tiny_qdq_graph_quantises_only_activations_so_nothing_runs_int8(tmp_path: Path):
    """The test double's Q/DQ graph leaves float weights without Q/DQ: TensorRT runs those convs in float."""
    path = make_tiny_onnx(tmp_path / "tiny.int8.onnx", tiny_contract(height=8, width=8), qdq=True)
    split = precision_split(onnx.load(str(path)))
    assert split.gmacs("weighted", "int8") == 0
    assert split.gmacs("weighted", "fp32") == pytest.approx((3 * 64 * 4 + tiny_contract().num_classes * 64 * 4) / 1e9)
    assert split.bytes["activation"]["int8"] == 4 * 64 * (1 + 2)   # the Q output, read by two convs through the DQ


def test_fp16_graph_counts_fp16_and_keeps_its_pinned_node_fp32():
    from onnxconverter_common import float16

    inits = [_init("w1", (8, 3, 1, 1)), _init("w2", (8, 8, 1, 1))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="half"),
             helper.make_node("Conv", ["c1", "w2"], ["y"], name="pinned")]
    model = _model(nodes, [("x", [1, 3, 4, 4])], ["y"], inits)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4]))
    half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=["pinned"])
    split = precision_split(half)
    assert split.macs["weighted"] == {"int8": 0, "fp16": 16 * 8 * 3, "fp32": 16 * 8 * 8}
    assert split.is_fp16
    assert split.bytes["weight"] == {"int8": 0, "fp16": 24 * 2, "fp32": 64 * 4, "other": 0}
    # An FP16 graph's FP32 parts are its pins: an --fp16 engine keeps them; an FP32 graph's become FP16.
    assert engine_split(split, "fp16") == split
    fp32 = precision_split(model)
    assert engine_split(fp32, "fp16").macs["weighted"] == {"int8": 0, "fp16": 16 * 8 * 11, "fp32": 0}
    assert engine_split(fp32, "fp16").bytes["weight"]["fp16"] == fp32.bytes["weight"]["fp32"] // 2
    assert engine_split(fp32, "fp32") == fp32


def test_a_weight_behind_a_cast_is_weighted_and_runs_in_the_cast_precision():
    inits = [numpy_helper.from_array(RNG.normal(size=(8, 4)).astype(np.float16), "w16")]
    nodes = [helper.make_node("Cast", ["w16"], ["w"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="pinned_matmul")]
    (cost,) = graph_costs(_model(nodes, [("x", [1, 10, 8])], ["y"], inits))
    assert (cost.kind, cost.precision, cost.macs) == ("weighted", "fp32", 10 * 4 * 8)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_metadata_round_trip_reads_without_onnx_or_torch(tmp_path: Path):
    model = set_cost_metadata(_qdq_graph())
    path = _save(model, tmp_path / "m.int8.onnx")
    expected = precision_split(_qdq_graph())
    reader = ("import sys; sys.modules['onnx'] = None; sys.modules['torch'] = None\n"
              "from mrfs_edge.metrics.cost import read_cost, cost_of_onnx\n"
              "from mrfs_edge.metrics.jetson_floor import summary_lines\n"
              f"split = read_cost({str(path)!r}); assert cost_of_onnx({str(path)!r}) == split\n"
              "print(split.to_json()); print(summary_lines(split)[1])\n"
              f"print(summary_lines(cost_of_onnx({str(tmp_path / 'bare.onnx')!r}))[0])")
    _save(_qdq_graph(), tmp_path / "bare.onnx")
    out = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent).stdout.splitlines()
    assert PrecisionSplit.from_json(out[0]) == expected
    assert out[1].startswith(FLOOR_LABEL)
    assert out[2] == UNKNOWN_COST


def test_set_cost_metadata_replaces_an_entry_and_a_copied_one_is_stale(tmp_path: Path):
    plain = _save(set_cost_metadata(set_cost_metadata(_arithmetic_graph())), tmp_path / "m.onnx")
    assert [p.key for p in onnx.load(str(plain)).metadata_props].count(COST_KEY) == 1
    assert read_cost(plain) == precision_split(_arithmetic_graph())
    # An FP32 graph's entry copied into a Q/DQ graph (a tool that keeps metadata) is not believed.
    copied = _qdq_graph()
    copied.metadata_props.add().CopyFrom(onnx.load(str(plain)).metadata_props[0])
    assert read_cost(_save(copied, tmp_path / "copied.onnx")) is None


def test_floor_arithmetic_on_a_known_split():
    nano = JETSONS[0]
    split = PrecisionSplit({"weighted": {"int8": 10 * 10**9, "fp16": 5 * 10**9, "fp32": 0},
                            "attention": {"int8": 0, "fp16": 0, "fp32": 10**9}},
                           {"activation": {"fp32": 10**9}, "boundary": {"int8": 10 * 10**6, "fp16": 20 * 10**6},
                            "weight": {"int8": 4 * 10**6}})
    result = floor(split, nano)
    compute = 2e3 * (10e9 / (nano.int8_tops * 1e12) + 5e9 / (nano.fp16_tflops * 1e12) + 1e9 / (nano.fp32_tflops * 1e12))
    assert result.compute_ms == pytest.approx(compute)
    assert result.memory_ms == pytest.approx(1e3 * 34e6 / (nano.bandwidth_gbs * 1e9))      # 0.5 ms < 3.6 ms
    assert (result.floor_ms, result.bound) == (pytest.approx(max(compute, result.memory_ms)), "compute")
    fast = Jetson("x", 1000.0, 1000.0, 1000.0, 1.0, "test")
    assert floor(split, fast).bound == "memory"
    assert floor(split, fast).floor_ms == pytest.approx(34.0)


def test_published_figures_are_dense_and_cited():
    figures = {j.name: (j.int8_tops, j.fp16_tflops, j.bandwidth_gbs) for j in JETSONS}
    # NVIDIA's sparse INT8 TOPS of the GPU (40, 60 of 100, 171 of 275) halved; FP16 half of dense INT8.
    assert figures == {"Orin Nano 8GB": (20.0, 10.0, 68.0), "Orin NX 16GB": (30.0, 15.0, 102.4),
                       "AGX Orin 64GB": (85.5, 42.75, 204.8)}
    assert all("Data Sheet" in j.citation or "Technical Brief" in j.citation for j in JETSONS)


def test_build_summary_shows_the_graphs_cost_and_floor(tmp_path: Path):
    from mrfs_edge.tools.build_engine import main

    tiny = make_tiny_onnx(tmp_path / "tiny.int8.onnx", tiny_contract(height=8, width=8), qdq=True)
    path = _save(set_cost_metadata(onnx.load(str(tiny))), tmp_path / "tiny.int8.onnx")
    assert main(["--onnx", str(path), "--int8", "--output-dir", str(tmp_path / "build")]) == 0
    cost = json.loads(next((tmp_path / "build").glob("*.build.json")).read_text())["cost"]
    assert cost == json.loads(json.dumps(cost_record(read_cost(path))))
    assert cost["gmacs"]["weighted"]["fp32"] == pytest.approx((3 + 3) * 64 * 4 / 1e9)
    assert [f["jetson"] for f in cost["floor"]["jetsons"]] == [j.name for j in JETSONS]
    assert cost["floor"]["label"] == FLOOR_LABEL


def test_benchmark_report_shows_gmacs_bytes_and_floors_per_mode(tmp_path: Path):
    path = _save(set_cost_metadata(_qdq_graph()), tmp_path / "m.int8.onnx")
    row = bench_report.empty_row(MODES["onnxruntime-int8"], "")
    row["cost"], why = bench_report.mode_cost(MODES["onnxruntime-int8"], path)
    assert why is None and row["cost"] == cost_record(read_cost(path))
    split = PrecisionSplit({"weighted": {"int8": 12_810_000_000, "fp16": 0, "fp32": 5_080_000_000},
                            "attention": {"int8": 0, "fp16": 0, "fp32": 5_710_000_000}},
                           {"activation": {"fp32": 5_361_000_000}, "boundary": {"fp32": 1_390_000_000},
                            "weight": {"int8": 11_000_000}})
    row["cost"] = cost_record(split)
    section = bench_report.cost_section([row])
    header, cells = section[2].strip("|").split("|"), section[4].strip("|").split("|")
    table = dict(zip((h.strip() for h in header), (c.strip() for c in cells)))
    assert (table["GMACs INT8"], table["GMACs FP16"], table["GMACs FP32"]) == ("12.81", "0.00", "10.79")
    assert (table["weighted INT8 %"], table["activation MB"], table["boundary MB"]) == ("71.6", "5361", "1390")
    nano = floor(split, JETSONS[0])
    assert table["Orin Nano 8GB floor ms"] == f"{nano.floor_ms:.1f} ({nano.bound})"
    assert FLOOR_LABEL in section[0]
    assert bench_report.mode_cost(MODES["pytorch-fp32"], path)[0] is None


def test_summary_lines_say_when_the_cost_is_unknown():
    assert summary_lines(None) == [UNKNOWN_COST]
    assert len(summary_lines(precision_split(_arithmetic_graph()))) == 2
