"""Per-branch INT8 scales for a convolution over a concat: the conv split by input branch, then summed.

A Concat feeding a Conv reaches INT8 through one per-tensor scale: TensorRT quantises the
Concat's output (or requantises every input to one scale), so a branch whose values are small
next to the others' (the raw visible and infrared images beside the fusion head's upsampled
features, in MRFS's ``CNN_fuse``) keeps only a few of its 8 bits. A convolution is linear in
its input channels, so ``Conv(Concat(x_1..x_K), W, b) = Σ_k Conv(x_k, W_k, b·[k = 1])`` with
``W_k`` the weight's input-channel slice of branch ``k``: exact, the same multiply-adds, and
each branch's conv reads its own input scale. The sum is a chain of Adds, each fed directly by
a branch conv, which TensorRT fuses into that conv (the running sum is its quantised residual
input, :func:`~mrfs_edge.calibration.qdq.residual_adds`).

Calibrate the split graph (its partial sums are new tensors) and build the Q/DQ graph from it.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

LOG = logging.getLogger(__name__)


def _channels(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    channels = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 1 and dims[1].HasField("dim_value"):
            channels[value.name] = dims[1].dim_value
    return channels


def concat_convs(model: onnx.ModelProto) -> list[str]:
    """Convs (group 1) reading a channel Concat of two or more inputs that nothing else reads."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    outputs = {o.name for o in graph.output}
    initializers = {i.name for i in graph.initializer}
    found = []
    for node in graph.node:
        concat = producer.get(node.input[0]) if node.op_type == "Conv" else None
        if concat is None or concat.op_type != "Concat" or len(concat.input) < 2:
            continue
        axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if axis == 1 and group == 1 and readers[concat.output[0]] == 1 and concat.output[0] not in outputs \
                and node.input[1] in initializers:
            found.append(node.name)
    return found


def split_concat_convs(model: onnx.ModelProto, convs: list[str] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` where each of ``convs`` (default :func:`concat_convs`) is split by branch.

    Branch ``k`` of ``conv`` becomes ``<conv>/branch<k>`` (the first one carries the bias); the
    partial sums are ``<conv>/sum<k>`` and the last one keeps the conv's output name, so the rest
    of the graph is unchanged. Node names keep the conv's name as prefix (its network block).
    """
    chosen = set(concat_convs(model) if convs is None else convs)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if not chosen:
        return out
    channels = _channels(model)
    producer = {o: n for n in graph.node for o in n.output}
    weights = {i.name: i for i in graph.initializer}
    replaced: dict[str, list[onnx.NodeProto]] = {}
    dropped: set[str] = set()
    new_weights: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.name not in chosen:
            continue
        concat = producer[node.input[0]]
        widths = [channels.get(i) for i in concat.input]
        if None in widths:
            LOG.debug(f"{node.name}: a Concat input has no static channel count, not split")
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        if sum(widths) != weight.shape[1]:
            continue
        attributes = [a for a in node.attribute]
        nodes: list[onnx.NodeProto] = []
        start, total = 0, None
        for k, (branch, width) in enumerate(zip(concat.input, widths)):
            stem = f"{node.name}/branch{k}"
            new_weights.append(numpy_helper.from_array(np.ascontiguousarray(weight[:, start:start + width]),
                                                       f"{stem}/weight"))
            inputs = [branch, f"{stem}/weight"] + ([node.input[2]] if k == 0 and len(node.input) > 2 else [])
            conv = onnx.helper.make_node("Conv", inputs, [f"{stem}/output"], name=stem)
            conv.attribute.extend(attributes)
            nodes.append(conv)
            if total is not None:
                last = k == len(widths) - 1
                summed = node.output[0] if last else f"{node.name}/sum{k}"
                # The branch conv feeds the Add directly: TensorRT fuses the Add into it.
                nodes.append(onnx.helper.make_node("Add", [f"{stem}/output", total], [summed],
                                                   name=f"{node.name}/sum{k}"))
                total = summed
            else:
                total = f"{stem}/output"
            start += width
        replaced[node.name] = nodes
        dropped.add(concat.name)
    kept = [n for n in graph.node if n.name not in dropped]
    del graph.node[:]
    for n in kept:
        graph.node.extend(replaced.get(n.name, [n]))
    graph.initializer.extend(new_weights)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    LOG.debug(f"split {len(replaced)} concat convs by branch")
    return out
