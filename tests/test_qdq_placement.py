"""Q/DQ placement TensorRT fuses: what build_qdq inserts, what the rule check flags, what strip_qdq keeps."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mrfs_edge.calibration.qdq import (
    build_qdq,
    qdq_tensors,
    quantized_nodes,
    residual_adds,
    strip_qdq,
    trt_rule_violations,
)
from mrfs_edge.core.errors import ExportError

RNG = np.random.default_rng(0)


def _weight(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.normal(size=shape).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _residual_block() -> onnx.ModelProto:
    """x → conv1 → Relu → conv2 → Add(·, x) → Relu → y (a ResNet basic block)."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu2")]
    return _model(nodes, [("x", [1, 4, 6, 6])], [("y", [1, 4, 6, 6])],
                  [_weight("w1", 4, 4, 3, 3), _weight("b1", 4), _weight("w2", 4, 4, 3, 3)])


def _head() -> onnx.ModelProto:
    """Two branches concatenated into a conv, two summed after their own convs, a Gemm and a MatMul.

    ``u``/``v`` → Concat → fuse (Conv); ``u`` → ca (Conv) → Resize, ``v`` → cb (Conv) → Resize → Add →
    pred (Conv) → Flatten → fc (Gemm, transB) and proj (MatMul); attention: MatMul(q, kᵀ) of two activations.
    """
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up")
    nodes = [helper.make_node("Concat", ["u", "v"], ["uv"], name="concat", axis=1),
             helper.make_node("Conv", ["uv", "wf"], ["f"], name="fuse"),
             helper.make_node("Conv", ["u", "wa"], ["a"], name="ca"),
             helper.make_node("Conv", ["v", "wb"], ["b"], name="cb"),
             helper.make_node("Resize", ["a", "", "up"], ["a2"], name="resize_a", mode="linear"),
             helper.make_node("Resize", ["b", "", "up"], ["b2"], name="resize_b", mode="linear"),
             helper.make_node("Add", ["a2", "b2"], ["sum"], name="sum"),
             helper.make_node("Conv", ["sum", "wp"], ["p"], name="pred"),
             helper.make_node("Flatten", ["p"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "wg"], ["g"], name="fc", transB=1),
             helper.make_node("MatMul", ["g", "wm"], ["m"], name="proj"),
             helper.make_node("Transpose", ["g"], ["gt"], name="kT", perm=[1, 0]),
             helper.make_node("MatMul", ["g", "gt"], ["attn"], name="attn/MatMul")]
    return _model(nodes, [("u", [1, 2, 4, 4]), ("v", [1, 2, 4, 4])], [("f", [1, 3, 4, 4]), ("m", [1, 6]), ("attn", [1, 1])],
                  [_weight("wf", 3, 4, 1, 1), _weight("wa", 3, 2, 1, 1), _weight("wb", 3, 2, 1, 1),
                   _weight("wp", 2, 3, 1, 1), _weight("wg", 5, 128), _weight("wm", 5, 6), scales])


def _amax(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Direct ranges of every tensor for one feed (exposing them all is fine on a tiny graph)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    names = [o for n in model.graph.node for o in n.output]
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in names
                                if t not in {o.name for o in model.graph.output})
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    return {name: float(np.abs(v).max()) for name, v in {**feed, **values}.items()}


def _producer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if tensor in n.output), None)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _scale(model: onnx.ModelProto, dq_output: str) -> np.ndarray:
    dq = _producer(model, dq_output)
    assert dq is not None and dq.op_type == "DequantizeLinear"
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == dq.input[1])


def _quantised_input(model: onnx.ModelProto, node: str, index: int) -> str | None:
    """The float tensor behind ``node``'s input ``index`` when it reads through Q/DQ, else None."""
    dq = _producer(model, _node(model, node).input[index])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    return _producer(model, dq.input[0]).input[0]


HEAD_FEED = {"u": RNG.normal(size=(1, 2, 4, 4)).astype(np.float32),
             "v": 10 * RNG.normal(size=(1, 2, 4, 4)).astype(np.float32)}
BLOCK_FEED = {"x": RNG.normal(size=(1, 4, 6, 6)).astype(np.float32)}


def test_layer_inputs_are_quantised_never_their_outputs_and_weights_per_output_channel():
    fp32 = _head()
    ranges = _amax(fp32, HEAD_FEED)
    qdq = build_qdq(fp32, ranges)
    onnx.checker.check_model(qdq)
    assert trt_rule_violations(qdq) == []
    assert set(quantized_nodes(qdq)) == {"fuse", "ca", "cb", "pred", "fc", "proj"}
    assert _quantised_input(qdq, "fuse", 0) == "uv"                       # after the Concat: one scale
    assert list(_node(qdq, "concat").input) == ["u", "v"]                 # its inputs stay float
    assert _quantised_input(qdq, "ca", 0) == "u" and _quantised_input(qdq, "cb", 0) == "v"
    # summed branches: each branch's conv has its own input scale (v is ten times u)
    assert _scale(qdq, _node(qdq, "cb").input[0]) > 5 * _scale(qdq, _node(qdq, "ca").input[0])
    assert _scale(qdq, _node(qdq, "pred").input[0]) == pytest.approx(ranges["sum"] / 127)
    for node, axis, channels in (("fuse", 0, 3), ("fc", 0, 5), ("proj", 1, 6)):
        dq = _producer(qdq, _node(qdq, node).input[1])
        assert next(a.i for a in dq.attribute if a.name == "axis") == axis
        weight = numpy_helper.to_array(next(i for i in fp32.graph.initializer if i.name == _node(fp32, node).input[1]))
        expected = np.abs(weight).max(axis=tuple(a for a in range(weight.ndim) if a != axis)) / 127
        np.testing.assert_allclose(_scale(qdq, _node(qdq, node).input[1]), expected, rtol=1e-6)
        assert _scale(qdq, _node(qdq, node).input[1]).shape == (channels,)
    for layer in ("fuse", "ca", "cb", "pred", "proj"):                    # no Q/DQ reads a layer's output ...
        for out in _node(qdq, layer).output:
            assert all(n.op_type != "QuantizeLinear" for n in qdq.graph.node if out in n.input)
    assert _quantised_input(qdq, "proj", 0) == "g"                        # ... unless it is the next layer's input
    assert _quantised_input(qdq, "attn/MatMul", 0) is None                # attention stays high by default
    session = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, want in zip(session.run(None, HEAD_FEED), reference.run(None, HEAD_FEED)):
        assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()      # INT8 error, not a broken graph


def test_attention_products_are_quantised_on_both_inputs_when_asked():
    fp32 = _head()
    assert "gt" not in qdq_tensors(fp32)
    assert {"g", "gt"} <= set(qdq_tensors(fp32, quantize_attention=True))
    qdq = build_qdq(fp32, _amax(fp32, HEAD_FEED), quantize_attention=True)
    assert (_quantised_input(qdq, "attn/MatMul", 0), _quantised_input(qdq, "attn/MatMul", 1)) == ("g", "gt")
    assert trt_rule_violations(qdq) == []
    stripped = strip_qdq(qdq, {"fc"})                                     # a sensitivity variant: attention high
    assert _quantised_input(stripped, "attn/MatMul", 0) is None and trt_rule_violations(stripped) == []


def test_the_residual_input_is_quantised_and_nothing_sits_between_the_conv_and_its_add():
    fp32 = _residual_block()
    assert residual_adds(fp32) == [("add", "conv2", 1)]
    assert qdq_tensors(fp32) == ["x", "r1"]
    qdq = build_qdq(fp32, _amax(fp32, BLOCK_FEED))
    assert trt_rule_violations(qdq) == []
    assert _node(qdq, "add").input[0] == "c2"                              # straight from the conv
    assert _quantised_input(qdq, "add", 1) == "x"
    assert _node(qdq, "add").input[1] == _node(qdq, "conv1").input[0]      # one Q/DQ pair for x, shared
    # sensitivity variants: the Add keeps its residual Q/DQ exactly while its conv is INT8
    assert _quantised_input(strip_qdq(qdq, {"conv2"}), "add", 1) == "x"
    without = strip_qdq(qdq, {"conv1"})
    assert list(_node(without, "add").input) == ["c2", "x"] and trt_rule_violations(without) == []
    assert trt_rule_violations(strip_qdq(qdq, {"conv2"})) == []


def test_a_missing_range_is_named():
    fp32 = _residual_block()
    with pytest.raises(ExportError, match="'r1'"):
        build_qdq(fp32, {"x": 1.0})


def _rewire(model: onnx.ModelProto, node: str, index: int, tensor: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _node(out, node).input[index] = tensor
    return out


def _with_qdq(model: onnx.ModelProto, tensor: str, reader: str, index: int, scale: float) -> onnx.ModelProto:
    """``model`` with a Q/DQ pair of ``scale`` on ``tensor`` in front of ``reader``'s input ``index``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    stem = f"extra/{reader}/{index}"
    out.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{stem}/s"),
                                  numpy_helper.from_array(np.array(0, np.int8), f"{stem}/z")])
    position = next(i for i, n in enumerate(out.graph.node) if n.name == reader)
    for offset, node in enumerate([
            helper.make_node("QuantizeLinear", [tensor, f"{stem}/s", f"{stem}/z"], [f"{stem}/q"], name=f"{stem}/Q"),
            helper.make_node("DequantizeLinear", [f"{stem}/q", f"{stem}/s", f"{stem}/z"], [f"{stem}/dq"],
                             name=f"{stem}/DQ")]):
        out.graph.node.insert(position + offset, node)
    _node(out, reader).input[index] = f"{stem}/dq"
    return out


def test_each_placement_rule_flags_a_graph_that_breaks_it():
    block = _residual_block()
    good = build_qdq(block, _amax(block, BLOCK_FEED))
    # a layer reading its weight quantised but its input float
    only_weight = _rewire(good, "conv2", 0, "r1")
    assert any("conv2: only its weight is quantised" in v for v in trt_rule_violations(only_weight))
    # the residual input left float
    float_residual = _rewire(good, "add", 1, "x")
    assert any("add: residual input x is not quantised" in v for v in trt_rule_violations(float_residual))
    # a Q/DQ between a conv and its Add
    between = _with_qdq(good, "c2", "add", 0, 0.1)
    assert any("Q/DQ between conv2 and its Add" in v for v in trt_rule_violations(between))
    # a layer's output quantised into a non-layer
    output = _with_qdq(good, "c1", "relu1", 0, 0.1)
    assert any("conv1: output quantised into relu1" in v for v in trt_rule_violations(output))
    head = _head()
    qdq = build_qdq(head, _amax(head, HEAD_FEED))
    # Concat inputs with two scales, and with one input quantised only
    two_scales = _with_qdq(_with_qdq(qdq, "u", "concat", 0, 0.01), "v", "concat", 1, 0.1)
    assert any("concat: Concat inputs quantised with different scales" in v for v in trt_rule_violations(two_scales))
    one_side = _with_qdq(qdq, "u", "concat", 0, 0.01)
    assert any("concat: Concat inputs" in v for v in trt_rule_violations(one_side))
    shared = _with_qdq(_with_qdq(qdq, "u", "concat", 0, 0.1), "v", "concat", 1, 0.1)
    assert not any("concat" in v for v in trt_rule_violations(shared))    # one shared scale is fine


def _concat_conv(shared: bool = False) -> onnx.ModelProto:
    """u, 10·v → Concat → 3×3 Conv with bias → y (and, if ``shared``, the Concat read by a Relu too)."""
    nodes = [helper.make_node("Concat", ["u", "v"], ["uv"], name="concat", axis=1),
             helper.make_node("Conv", ["uv", "w", "bias"], ["y"], name="head/CNN_fuse/Conv", pads=[1, 1, 1, 1])]
    outputs = [("y", [1, 3, 4, 4])]
    if shared:
        nodes.append(helper.make_node("Relu", ["uv"], ["r"], name="relu"))
        outputs.append(("r", [1, 4, 4, 4]))
    return _model(nodes, [("u", [1, 2, 4, 4]), ("v", [1, 2, 4, 4])], outputs,
                  [_weight("w", 3, 4, 3, 3), _weight("bias", 3)])


def test_only_a_conv_over_a_concat_nothing_else_reads_is_a_candidate():
    from mrfs_edge.calibration.branches import concat_convs

    assert concat_convs(_concat_conv()) == ["head/CNN_fuse/Conv"]
    assert concat_convs(_concat_conv(shared=True)) == []


def test_concat_branches_are_balanced_exactly_for_one_scale():
    from mrfs_edge.calibration.branches import balance_concat_branches, concat_inputs

    # u → Conv → Relu → Resize and the graph input v (cannot be scaled) → Concat → Conv
    scales = numpy_helper.from_array(np.array([1, 1, 1, 1], np.float32), "same")
    nodes = [helper.make_node("Conv", ["u", "wu", "bu"], ["cu"], name="point"),
             helper.make_node("Relu", ["cu"], ["ru"], name="relu"),
             helper.make_node("Resize", ["ru", "", "same"], ["xu"], name="resize", mode="linear"),
             helper.make_node("Concat", ["xu", "v"], ["uv"], name="concat", axis=1),
             helper.make_node("Conv", ["uv", "w"], ["y"], name="fuse", pads=[1, 1, 1, 1])]
    fp32 = _model(nodes, [("u", [1, 2, 4, 4]), ("v", [1, 2, 4, 4])], [("y", [1, 3, 4, 4])],
                  [_weight("wu", 2, 2, 1, 1), _weight("bu", 2), _weight("w", 3, 4, 3, 3), scales])
    feed = {"u": 20 * HEAD_FEED["u"], "v": HEAD_FEED["v"] / 10}
    ranges = _amax(fp32, feed)
    assert concat_inputs(fp32) == ["xu", "v"]
    balanced, new_ranges = balance_concat_branches(fp32, ranges)
    reference = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    rewritten = ort.InferenceSession(balanced.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(rewritten.run(None, feed)[0], reference.run(None, feed)[0], rtol=1e-4, atol=1e-4)
    direct = _amax(balanced, feed)
    for tensor in ("cu", "ru", "xu", "v", "uv"):
        assert new_ranges[tensor] == pytest.approx(direct[tensor], rel=1e-5)
    weight = numpy_helper.to_array(next(i for i in balanced.graph.initializer if i.name == "w"))
    ratio = [new_ranges[t] / np.abs(weight[:, a:a + 2]).max() for t, a in (("xu", 0), ("v", 2))]
    assert ratio[0] == pytest.approx(ratio[1], rel=1e-5)                  # activation/weight balance is shared
    assert trt_rule_violations(build_qdq(balanced, new_ranges)) == []
