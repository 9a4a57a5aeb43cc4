"""First convolutions read the camera's 8-bit grid exactly in INT8 (an exact rewrite before Q/DQ).

A convolution reading the network's input images sees values ``k / 255``
(:mod:`mrfs_edge.processing.image_grid`). Per-tensor symmetric INT8 calibrated on them gets a
scale near ``1 / 127``: half the camera's levels merge, and on the demo model that input
rounding was most of the INT8 graph's disagreement with FP32. Shifted by ``c = 128 / 255`` the
same values are ``k − 128`` steps of ``1 / 255``, which INT8 holds without error. The shift is
made exact for the convolution, so TensorRT still runs it as one INT8 kernel reading a
DequantizeLinear directly:

``Conv(W, b, pads)(x)`` = ``Conv(W, b + c·ΣW, no pads)(Pad(x − c, pads, value −c))``

(the convolution is linear; zero padding of ``x`` is padding of ``x − c`` with ``−c``). The Sub
and Pad run on the three-channel frame in float before the QuantizeLinear; TensorRT parses a
constant Pad with a non-zero value as a Slice in fill mode (TensorRT 8.2 and later).

Which convolutions qualify is measured, not assumed: their input must depend on graph inputs
only, and every calibration pair must put it on the grid (:func:`grid_inputs`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mrfs_edge.calibration.qdq import weighted_nodes
from mrfs_edge.calibration.ranges import pruned_model
from mrfs_edge.calibration.sensitivity import scoring_session
from mrfs_edge.processing import image_grid

LOG = logging.getLogger(__name__)


def _input_only(graph: onnx.GraphProto, tensor: str) -> bool:
    """Whether ``tensor`` is computed from graph inputs and constants alone (no weight of the network)."""
    producer = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input}
    stack, seen = [tensor], set()
    while stack:
        name = stack.pop()
        if name in seen or name in inputs or not name:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None or node.op_type in ("Conv", "MatMul", "Gemm"):
            return False          # an initializer read directly, or a weighted layer on the way
        stack.extend(node.input[:1] if node.op_type in ("Mul", "Div", "Sub", "Add") else node.input)
    return True


def grid_candidates(model: onnx.ModelProto) -> list[str]:
    """Inputs of weighted Convs that are functions of the graph inputs only (the frames, maybe cast or transposed)."""
    nodes = {n.name: n for n in model.graph.node}
    found = [nodes[name].input[0] for name in weighted_nodes(model) if nodes[name].op_type == "Conv"]
    return [t for t in dict.fromkeys(found) if _input_only(model.graph, t)]


def grid_inputs(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]], threads: int = 0) -> list[str]:
    """The :func:`grid_candidates` whose values lie on the 8-bit grid for every feed (the calibration pairs)."""
    candidates = grid_candidates(model)
    if not candidates:
        return []
    inputs = {i.name for i in model.graph.input}
    computed = [t for t in candidates if t not in inputs]
    session = scoring_session(pruned_model(model, computed), threads) if computed else None
    names = [i.name for i in session.get_inputs()] if session is not None else []
    on_grid = dict.fromkeys(candidates, True)
    for feed in feeds:
        values = {t: feed[t] for t in candidates if t in inputs}
        if session is not None:
            values.update(zip(computed, session.run(computed, {n: feed[n] for n in names})))
        for tensor, array in values.items():
            on_grid[tensor] = on_grid[tensor] and image_grid.on_grid(array)
    off = [t for t, ok in on_grid.items() if not ok]
    if off:
        LOG.info(f"not on the 8-bit grid, quantised by their calibrated range: {', '.join(off)}")
    return [t for t, ok in on_grid.items() if ok]


def _attribute(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def shift_onto_grid(model: onnx.ModelProto, tensors: Sequence[str]) -> tuple[onnx.ModelProto, dict[str, float]]:
    """``model`` with every weighted Conv reading a tensor of ``tensors`` rewritten to read it shifted.

    Returns the new model (the same function, up to float rounding of the folded bias) and the
    INT8 range of each tensor the rewritten Convs now read: ``127 / 255``, whose scale is one
    camera level. Other readers of ``tensors`` (a Concat into the fusion head) are unchanged.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    weighted = set(weighted_nodes(model))
    ranges: dict[str, float] = {}
    added: dict[str, list[onnx.NodeProto]] = {}   # tensor → nodes to place before its first rewritten reader

    def constant(name: str, value: np.ndarray) -> str:
        if name not in inits:
            inits[name] = numpy_helper.from_array(value, name)
            graph.initializer.append(inits[name])
        return name

    for node in graph.node:
        tensor = node.input[0] if node.op_type == "Conv" and node.name in weighted else None
        if tensor not in tensors:
            continue
        if _attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            LOG.info(f"{node.name}: auto_pad convolution left as it is (not on the 8-bit grid)")
            continue
        shifted = f"{tensor}/grid_shifted"
        nodes = added.setdefault(tensor, [])
        if not nodes:
            nodes.append(helper.make_node("Sub", [tensor, constant(f"{tensor}/grid_shift",
                                                                   np.array(image_grid.SHIFT, np.float32))],
                                          [shifted], name=f"{tensor}/grid_shift/Sub"))
        weight = numpy_helper.to_array(inits[node.input[1]])
        pads = list(_attribute(node, "pads", [0] * (2 * (weight.ndim - 2))))
        reads = shifted
        if any(pads):
            half = len(pads) // 2
            full = [0, 0, *pads[:half], 0, 0, *pads[half:]]      # ONNX Pad: all begins, then all ends
            reads = f"{node.name}/grid_padded"
            nodes.append(helper.make_node(
                "Pad", [shifted, constant(f"{node.name}/grid_pads", np.array(full, np.int64)),
                        constant(f"{tensor}/grid_fill", np.array(-image_grid.SHIFT, np.float32))],
                [reads], name=f"{node.name}/grid_pad", mode="constant"))
        bias = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] \
            else np.zeros(weight.shape[0], np.float32)
        folded = (bias.astype(np.float64)
                  + image_grid.SHIFT * weight.astype(np.float64).sum(axis=tuple(range(1, weight.ndim))))
        bias_name = constant(f"{node.name}/grid_bias", folded.astype(np.float32))
        if len(node.input) > 2:
            node.input[2] = bias_name
        else:
            node.input.append(bias_name)
        node.input[0] = reads
        for attribute in [a for a in node.attribute if a.name == "pads"]:
            node.attribute.remove(attribute)
        ranges[reads] = image_grid.AMAX
    if not added:
        return out, ranges
    # Graph order stays topological: the new nodes follow the tensor's producer (graph inputs: first).
    inputs = {i.name for i in graph.input}
    ordered = [n for tensor in added if tensor in inputs for n in added[tensor]]
    for node in graph.node:
        ordered.append(node)
        ordered.extend(n for tensor in node.output if tensor in added for n in added[tensor])
    del graph.node[:]
    graph.node.extend(ordered)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    LOG.info(f"{len(ranges)} first convolution(s) read the 8-bit grid exactly (input shifted by 128/255)")
    return out, ranges
