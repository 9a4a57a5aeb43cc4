"""INT8 calibration: pair selection, TensorRT's Q/DQ rules, mixed-precision choice, the pipeline."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mrfs_edge.assets import CALIB_SPLIT, SAMPLES
from mrfs_edge.calibration.dataset import select_pairs, stratum
from mrfs_edge.calibration.qdq import strip_qdq, trt_rule_violations
from mrfs_edge.calibration.sensitivity import (
    Budget,
    GroupResult,
    group_of,
    select_mixed_precision,
)
from mrfs_edge.io.pairs import PairFolder
from mrfs_edge.tools.calibrate import parse_budget


def test_pairs_are_taken_across_day_and_night_and_spread_within_each():
    names = [f"{i:05d}{'D' if i < 60 else 'N'}" for i in range(100)]
    chosen = [names[i] for i in select_pairs(names, 6)]
    assert sum(stratum(n) == "day" for n in chosen) == 3 and sum(stratum(n) == "night" for n in chosen) == 3
    assert chosen[0] == "00000D" and "00059D" in chosen and "00099N" in chosen   # spread to both ends
    assert select_pairs(names, 6) == select_pairs(names, 6)                      # deterministic
    assert len(select_pairs(names[:3], 10)) == 3


def test_budget_text_and_errors():
    budget = parse_budget("agreement=0.99,psnr=35,miou=0.5")
    assert (budget.min_agreement, budget.min_psnr, budget.max_miou_drop, budget.min_int8_mac_fraction) == (
        0.99, 35.0, 0.5, 0.95)
    with pytest.raises(ValueError, match="agreement=F"):
        parse_budget("accuracy=1")


def test_the_default_budget_asks_for_95_percent_int8_and_checks_the_miou_drop():
    budget = Budget()
    assert (budget.min_agreement, budget.min_psnr, budget.max_miou_drop, budget.min_int8_mac_fraction) == (
        0.995, 40.0, 0.3, 0.95)
    assert budget.miou_met(0.3) and not budget.miou_met(0.31) and not budget.miou_met(float("nan"))
    assert budget.miou_met(None)          # unlabelled held-out pairs: nothing to check


def _qdq_conv(zero_point: int = 0, zero_dtype=np.int8, weight_scale_shape=(4,), axis: int = 0) -> onnx.ModelProto:
    """x → Q/DQ → Conv(W behind Q/DQ) → y: the pattern the calibration pipeline emits."""
    weight = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w"),
             numpy_helper.from_array(np.full(weight_scale_shape, 0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(weight_scale_shape, np.int8), "w_zero"),
             numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(zero_point, zero_dtype), "x_zero")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="x_dq"),
             helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["wq"], name="w_q", axis=axis),
             helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"], name="w_dq", axis=axis),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="backbone/block1/conv")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tensorrt_qdq_rules_accept_the_conformant_pattern_and_name_each_breach():
    assert trt_rule_violations(_qdq_conv()) == []
    assert any("zero point" in v for v in trt_rule_violations(_qdq_conv(zero_point=3)))
    assert any("zero point" in v for v in trt_rule_violations(_qdq_conv(zero_dtype=np.uint8)))
    assert any("per tensor" in v for v in trt_rule_violations(_qdq_conv(weight_scale_shape=())))
    assert any("axis 1" in v for v in trt_rule_violations(_qdq_conv(axis=1)))


def test_stripping_qdq_rewires_consumers_to_the_float_tensors():
    stripped = strip_qdq(_qdq_conv(), keep=set())
    assert [n.op_type for n in stripped.graph.node] == ["Conv"]
    assert list(stripped.graph.node[0].input) == ["x", "w"]
    onnx.checker.check_model(stripped)
    assert [n.op_type for n in strip_qdq(_qdq_conv(), keep={"backbone/block1/conv"}).graph.node].count("Conv") == 1


def test_node_names_map_to_network_blocks():
    assert group_of("/backbone/extra_patch_embed2/proj/Conv") == "infrared patch-embed 2"
    assert group_of("/backbone/block3.1/attn/q/MatMul") == "visible blocks 3"
    assert group_of("/backbone/IGMAVCs.0/conv/Conv") == "IGM-Att 1"
    assert group_of("/decode_head/linear_fuse/conv/Conv") == "segmentation head fuse+pred"


class _ScriptedEvaluator:
    """Stands in for ONNX Runtime: the agreement lost is the sum of the quantised groups' damage."""

    def __init__(self, groups: list[GroupResult]) -> None:
        self.groups = groups

    def score(self, quantised):
        loss = sum(g.damage for g in self.groups if g.name in quantised)
        return type("Score", (), {"pixel_agreement": 1.0 - loss, "fused_psnr": 50.0})()


def _budget(**floors) -> Budget:
    return Budget(**{"min_int8_mac_fraction": 0.5, **floors})


def test_mixed_precision_keeps_the_fewest_damaging_groups_high():
    groups = [GroupResult(f"g{i}", [f"n{i}"], macs, 0.0, 0.0, damage)
              for i, (macs, damage) in enumerate([(100, 0.001), (100, 0.012), (50, 0.0005), (10, 0.0001)])]
    result = select_mixed_precision(_ScriptedEvaluator(groups), _budget(min_agreement=0.99), groups, 260)
    assert result.kept_high == ["g1"]          # alone it breaks the 1 % budget; the rest fit together
    assert result.met and result.int8_mac_fraction == pytest.approx(160 / 260)
    assert set(result.quantized_groups) == {"g0", "g2", "g3"}
    strict = select_mixed_precision(_ScriptedEvaluator(groups), Budget(min_agreement=0.99), groups, 260)
    assert strict.kept_high == ["g1"] and not strict.met     # 62 % of the MACs in INT8 is below the 95 % default


def test_pipeline_writes_a_conformant_qdq_model_with_measured_figures(tmp_path, demo_onnx):
    from mrfs_edge.calibration.pipeline import CalibrationConfig, calibrate

    (tmp_path / "eval.txt").write_text("00147D\n01110N\n")
    artifacts = calibrate(demo_onnx, tmp_path / "out", PairFolder(SAMPLES, CALIB_SPLIT),
                          CalibrationConfig(count=2, method="max", quantizer="builtin", mixed_precision=False),
                          PairFolder(SAMPLES, tmp_path / "eval.txt"))
    qdq = onnx.load(str(artifacts.qdq_onnx))
    assert trt_rule_violations(qdq) == []
    summary = json.loads(artifacts.summary_json.read_text())
    assert summary["held_out"]["pairs"] == 2 and 0.9 < summary["held_out"]["pixel_agreement"] <= 1.0
    assert summary["int8_layers"] == summary["weighted_layers"] > 100     # no mixed precision asked for
    assert summary["int8_weighted_mac_fraction"] == 1.0
    assert 0.5 < summary["int8_mac_fraction"] < 1.0   # attention MatMuls between activations stay high
    held = summary["held_out"]   # the bundled pairs have labels: mIoU of both models and the drop in points
    assert 0.0 < held["miou"] <= 1.0 and held["miou_drop"] == pytest.approx(100 * (held["miou_fp32"] - held["miou"]))
    assert summary["calibration"]["names"] == ["00530D", "00720N"]    # one day, one night
    assert summary["grid_inputs"] == ["visible", "infrared"]       # both frames reach INT8 on their 8-bit grid
    assert json.loads(artifacts.range_table.read_text())["pairs"] == ["00530D", "00720N"]
    for phase in ("ranges", "qdq", "sensitivity", "qdq_model", "held_out"):
        assert summary["phases"][phase]["seconds"] >= 0 and summary["phases"][phase]["cpu_seconds"] >= 0 and summary["phases"][phase]["peak_rss_mb"] > 0
    assert "selection" not in summary["phases"] and summary["sensitivity"] == []
    assert summary["peak_rss_mb"] >= max(p["peak_rss_mb"] for p in summary["phases"].values())
    metadata = {p.key: p.value for p in qdq.metadata_props}
    assert "mrfs_edge.core.contract" in metadata and "mrfs_edge.quantization" in metadata
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_one_costly_group_doing_most_harm_is_kept_instead_of_many_cheap_ones():
    cheap = [GroupResult(f"cheap{i}", [f"c{i}"], 10, 0.0, 0.0, 0.0012) for i in range(4)]
    head = GroupResult("head", ["h"], 300, 0.0, 0.0, 0.012)
    groups = cheap + [head]
    result = select_mixed_precision(_ScriptedEvaluator(groups), _budget(min_agreement=0.99, agreement_margin=0.0),
                                    groups, 340)
    # Ranked per multiply-add, the cheap groups come first and the bisection ends up keeping all five.
    assert result.kept_high == ["head"] and result.int8_mac_fraction == pytest.approx(40 / 340)
    assert result.agreement == pytest.approx(1 - 4 * 0.0012) and result.met is False   # < half the MACs INT8


def test_progress_bars_are_off_when_stderr_is_no_terminal_and_counts_agree_with_their_nouns(tmp_path, monkeypatch):
    from mrfs_edge.core.log import plural, progress

    with (tmp_path / "log.txt").open("w") as log:
        monkeypatch.setattr("sys.stderr", log)
        bar = progress(range(3), desc="calibration")
        assert list(bar) == [0, 1, 2] and bar.disable
    assert (tmp_path / "log.txt").read_text() == ""
    assert (plural(1, "group"), plural(2, "group"), plural(0, "group")) == ("1 group", "2 groups", "0 groups")


def test_selection_ticks_once_per_variant_it_scores():
    groups = [GroupResult(f"g{i}", [f"n{i}"], macs, 0.0, 0.0, damage)
              for i, (macs, damage) in enumerate([(100, 0.001), (100, 0.012), (50, 0.0005), (10, 0.0001)])]
    ticks: list[int] = []
    result = select_mixed_precision(_ScriptedEvaluator(groups), _budget(min_agreement=0.99), groups, 260,
                                    tick=lambda: ticks.append(1))
    assert len(ticks) == len(result.steps) > 1


def _two_block_qdq() -> onnx.ModelProto:
    """Two quantised Convs in two blocks; the second's output joins a residual Add with a Q/DQ'd input."""
    rng = np.random.default_rng(1)
    inits, nodes = [], []

    def qdq(tensor: str, scale, axis=None) -> str:
        extra = {} if axis is None else {"axis": axis}
        inits.extend([numpy_helper.from_array(np.asarray(scale, np.float32), f"{tensor}_s"),
                      numpy_helper.from_array(np.zeros(np.shape(scale), np.int8), f"{tensor}_z")])
        nodes.extend([helper.make_node("QuantizeLinear", [tensor, f"{tensor}_s", f"{tensor}_z"], [f"{tensor}_q"], **extra),
                      helper.make_node("DequantizeLinear", [f"{tensor}_q", f"{tensor}_s", f"{tensor}_z"],
                                       [f"{tensor}_dq"], **extra)])
        return f"{tensor}_dq"

    for i, name in enumerate(("/backbone/block1/conv/Conv", "/backbone/block2/conv/Conv")):
        inits.append(numpy_helper.from_array(rng.normal(size=(3, 3, 1, 1)).astype(np.float32), f"w{i}"))
        source = "x" if i == 0 else "y0"
        nodes.append(helper.make_node("Conv", [qdq(source, 0.037), qdq(f"w{i}", np.full(3, 0.021), axis=0)], [f"y{i}"],
                                      name=name))
    nodes.append(helper.make_node("Add", ["y1", "y0_dq"], ["z"], name="/backbone/block2/Add"))   # shares y0's pair
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_one_gated_session_runs_every_mixed_precision_variant_exactly():
    """Gates on give the Q/DQ graph's outputs, off the float graph's, one block on that of the graph stripped to it."""
    from mrfs_edge.calibration.sensitivity import gated_graph, qdq_groups, scoring_session

    model = _two_block_qdq()
    groups = qdq_groups(model)
    assert groups == {"visible blocks 1": ["/backbone/block1/conv/Conv"],
                      "visible blocks 2": ["/backbone/block2/conv/Conv", "/backbone/block2/Add"]}
    gated, gates = gated_graph(model, groups)
    session = scoring_session(gated)
    x = {"x": np.random.default_rng(2).normal(size=(1, 3, 4, 4)).astype(np.float32) * 3}

    def run(quantised: set[str]) -> np.ndarray:
        return session.run(None, {**x, **{gate: np.array(g in quantised) for g, gate in gates.items()}})[0]

    def plain(m: onnx.ModelProto) -> np.ndarray:
        return scoring_session(m).run(None, x)[0]

    def same(a: np.ndarray, b: np.ndarray) -> bool:   # float rounding apart (ORT fuses the plain graphs' Conv+Add)
        return np.allclose(a, b, rtol=1e-6, atol=1e-6)

    assert same(run(set(groups)), plain(model))
    assert same(run(set()), plain(strip_qdq(model, keep=set())))
    assert same(run({"visible blocks 2"}), plain(strip_qdq(model, keep=set(groups["visible blocks 2"]))))
    assert not same(run(set(groups)), run(set())) and not same(run({"visible blocks 1"}), run(set()))
