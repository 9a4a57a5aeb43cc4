"""The first convolutions read the frames' 8-bit grid exactly: the rewrite is exact and INT8 loses nothing there."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="graph rewriting needs onnx (not in the core install)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mrfs_edge.calibration.input_grid import grid_candidates, grid_inputs, shift_onto_grid  # noqa: E402
from mrfs_edge.calibration.qdq import build_qdq, qdq_tensors, trt_rule_violations  # noqa: E402
from mrfs_edge.calibration.sensitivity import scoring_session  # noqa: E402
from mrfs_edge.processing import image_grid  # noqa: E402


def _frames_model(bias: bool = True) -> onnx.ModelProto:
    """x (3 ch) → Conv 7×7 stride 4 pad 3 → Relu → Conv 3×3 pad 1 (group 2); x also Concat-ed beside the features."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 7, 7)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b1")]
    first = ["x", "w1", "b1"] if bias else ["x", "w1"]
    nodes = [helper.make_node("Conv", first, ["c1"], name="stem/Conv", kernel_shape=[7, 7], strides=[4, 4],
                              pads=[3, 3, 3, 3]),
             helper.make_node("Relu", ["c1"], ["r1"], name="stem/Relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="block/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              group=2),
             helper.make_node("Identity", ["x"], ["x_copy"], name="raw/Identity")]
    graph = helper.make_graph(nodes, "frames", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4]),
                               helper.make_tensor_value_info("x_copy", TensorProto.FLOAT, [1, 3, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _frame(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).integers(0, 256, (1, 3, 16, 16)) / 255.0).astype(np.float32)


def test_camera_levels_are_on_the_grid_and_resized_or_out_of_range_values_are_not():
    assert image_grid.on_grid(_frame(0)) and image_grid.on_grid(np.array([0.0, 1.0], np.float32))
    assert not image_grid.on_grid(np.array([0.5 / 255], np.float32))     # between two levels (a resize makes these)
    assert not image_grid.on_grid(np.array([2.0], np.float32)) and not image_grid.on_grid(np.array([-1 / 255]))
    assert not image_grid.on_grid(np.zeros(0))


@pytest.mark.parametrize("bias", [True, False])
def test_the_shift_is_exact_and_every_shifted_value_is_an_int8_level(bias):
    model = _frames_model(bias)
    assert grid_candidates(model) == ["x"]          # block/Conv reads a weighted layer's output: not a frame
    shifted, ranges = shift_onto_grid(model, ["x"])
    onnx.checker.check_model(shifted)
    (reads,) = ranges
    assert ranges[reads] == pytest.approx(127 / 255)
    reference = scoring_session(model)
    rewritten = scoring_session(shifted)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(shifted)
    exposed.graph.output.append(helper.make_empty_tensor_value_info(reads))
    for seed in range(3):
        feed = {"x": _frame(seed)}
        for a, b in zip(reference.run(None, feed), rewritten.run(None, feed)):
            np.testing.assert_allclose(a, b, atol=2e-5)      # the padding border included
        levels = scoring_session(exposed).run([reads], feed)[0] / np.float32(image_grid.STEP)
        assert np.abs(levels - np.rint(levels)).max() < 1e-3 and levels.min() >= -128 and levels.max() <= 127
    # only the frame's Conv reads it shifted; the raw copy beside it is untouched
    assert [n.input[0] for n in shifted.graph.node if n.op_type == "Identity"] == ["x"]


def test_quantised_the_rewritten_stem_reads_its_input_without_rounding_and_obeys_tensorrt_rules():
    shifted, grid_ranges = shift_onto_grid(_frames_model(), ["x"])
    ranges = {t: 4.0 for t in qdq_tensors(shifted)} | grid_ranges
    qdq = build_qdq(shifted, ranges)
    assert trt_rule_violations(qdq) == []
    feed = {"x": _frame(7)}
    # with the weights float, the stem's INT8 input is lossless: its output is the FP32 one
    weights_float = onnx.ModelProto()
    weights_float.CopyFrom(qdq)
    stem = next(n for n in weights_float.graph.node if n.name == "stem/Conv")
    stem.input[1] = "w1"
    weights_float.graph.output.append(helper.make_empty_tensor_value_info("c1"))
    exposed = onnx.ModelProto()
    exposed.CopyFrom(_frames_model())
    exposed.graph.output.append(helper.make_empty_tensor_value_info("c1"))
    np.testing.assert_allclose(scoring_session(weights_float).run(["c1"], feed)[0],
                               scoring_session(exposed).run(["c1"], feed)[0], atol=2e-5)


def test_frames_off_the_grid_keep_their_calibrated_range():
    model = _frames_model()
    assert grid_inputs(model, [{"x": _frame(0)}, {"x": _frame(1)}]) == ["x"]
    resized = {"x": (_frame(2) + np.float32(0.3 / 255)).clip(0, 1)}
    assert grid_inputs(model, [{"x": _frame(0)}, resized]) == []
    assert shift_onto_grid(model, [])[1] == {}
