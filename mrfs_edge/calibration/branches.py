"""One INT8 scale for a convolution over a concat whose branches have very different ranges.

A Concat feeding a Conv reaches INT8 through one per-tensor scale: TensorRT quantises the
Concat's output (or requantises every input to one scale), so a branch whose values are small
next to the others' keeps only a few of its 8 bits. In MRFS's fusion head ``CNN_fuse`` reads
eight upsampled features beside the raw visible and infrared images that way (3 dB of fused
PSNR on the demo deploy graph). Splitting the conv per branch and summing gives each branch its
own scale, but TensorRT then needs every partial sum quantised as the fused Add's residual:
measured, that lost another 3 dB. :func:`balance_concat_branches` keeps the graph as it is and
rescales the branches instead, exactly (the factors fold into the convs that make them).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


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


# Ops through which a positive per-tensor factor passes unchanged: f(a·x) = a·f(x) for a > 0.
_HOMOGENEOUS = ("Relu", "Resize", "Identity", "MaxPool", "Reshape", "Transpose", "Flatten")


def _scalable_source(graph: onnx.GraphProto, tensor: str, initializers: set[str]) -> list[onnx.NodeProto] | None:
    """The chain ``Conv → homogeneous ops → tensor``, each output read once, or None."""
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    chain: list[onnx.NodeProto] = []
    while tensor in producer:
        node = producer[tensor]
        chain.append(node)
        if readers.get(node.output[0], 0) != 1:      # scaling it would change another reader too
            return None
        if node.op_type == "Conv":
            own = all(i in initializers and readers.get(i, 0) == 1 for i in node.input[1:])
            return chain if own else None
        if node.op_type not in _HOMOGENEOUS:
            return None
        tensor = node.input[0]
    return None


def concat_inputs(model: onnx.ModelProto, convs: list[str] | None = None) -> list[str]:
    """The Concat inputs of ``convs`` (default :func:`concat_convs`): ranges :func:`balance_concat_branches` reads."""
    chosen = concat_convs(model) if convs is None else convs
    producer = {o: n for n in model.graph.node for o in n.output}
    return [i for n in model.graph.node if n.name in chosen for i in producer[n.input[0]].input]


def balance_concat_branches(model: onnx.ModelProto, ranges: dict[str, float], convs: list[str] | None = None
                            ) -> tuple[onnx.ModelProto, dict[str, float]]:
    """Equalise the branches of a conv's Concat for one INT8 scale, exactly (per-branch smoothing).

    Branch ``k`` with activation amax ``r_k`` and weight slice amax ``w_k`` is multiplied by
    ``a_k`` (folded into the conv that makes it, through ReLU/Resize, which commute with a
    positive factor) and its weight slice divided by ``a_k``: the network computes the same, while
    every branch ends with the same ratio of activation range to weight range as the reference
    branch (one that cannot be scaled, such as a graph input, else the widest), so one
    activation scale and the per-channel weight scales suit all branches at once (SmoothQuant's
    balance, per branch). Returns the new model and ``ranges`` updated for the scaled tensors.
    """
    chosen = set(concat_convs(model) if convs is None else convs)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    new_ranges = dict(ranges)
    inits = {i.name: i for i in graph.initializer}
    names = set(inits)
    producer = {o: n for n in graph.node for o in n.output}
    channels = _channels(model)
    for node in [n for n in graph.node if n.name in chosen]:
        concat = producer[node.input[0]]
        widths = [channels.get(i) for i in concat.input]
        weight = numpy_helper.to_array(inits[node.input[1]]).copy()
        if None in widths or sum(widths) != weight.shape[1] or any(i not in ranges for i in concat.input):
            continue
        starts = np.cumsum([0] + widths)
        w = [float(np.abs(weight[:, a:b]).max()) for a, b in zip(starts[:-1], starts[1:])]
        r = [float(ranges[i]) for i in concat.input]
        chains = [_scalable_source(graph, i, names) for i in concat.input]
        fixed = [k for k, c in enumerate(chains) if c is None] or [int(np.argmax(r))]
        reference = max(fixed, key=lambda k: r[k] * w[k])
        ratio = r[reference] / max(w[reference], 1e-12)
        for k, chain in enumerate(chains):
            if chain is None or k == reference or r[k] <= 0 or w[k] <= 0:
                continue
            factor = float(np.sqrt(ratio * w[k] / r[k]))     # r·a / (w / a) = ratio
            conv = chain[-1]
            for index in range(1, len(conv.input)):
                tensor = inits[conv.input[index]]
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor),
                                                        tensor.name))
            weight[:, starts[k]:starts[k + 1]] /= np.float32(factor)
            for link in chain:
                for o in link.output:
                    if o in new_ranges:
                        new_ranges[o] = new_ranges[o] * factor
            new_ranges[concat.input[k]] = r[k] * factor
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
        if concat.output[0] in new_ranges:   # after balancing the concat's range is its widest branch's
            new_ranges[concat.output[0]] = max(new_ranges[i] for i in concat.input)
    return out, new_ranges
