"""Explicit INT8 quantisation: Q/DQ ONNX models that TensorRT accepts, and their surgery.

Q/DQ pairs go on the inputs of weighted layers only (Conv, MatMul and Gemm with a weight
initializer): symmetric INT8, zero points 0, weights per channel on the output axis, float
weights kept behind a Q/DQ pair (what TensorRT 8.5 to 10 parse). LayerNorm, Softmax, the
attention MatMuls between two activations and the final Sigmoid stay in higher precision.

Ranges come from :mod:`mrfs_edge.calibration.ranges` (streamed, bounded memory) and
:func:`build_qdq` places the pairs where TensorRT fuses them; mixed-precision variants are made by
removing Q/DQ pairs from the fully quantised graph (:func:`strip_qdq`), which takes milliseconds
instead of a re-quantisation. NVIDIA ModelOpt's ONNX PTQ produces the final model instead when it
is installed (:func:`quantize_modelopt`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from mrfs_edge.calibration.dataset import CalibrationSet
from mrfs_edge.core.errors import ExportError

LOG = logging.getLogger(__name__)

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
def weighted_nodes(model: onnx.ModelProto) -> list[str]:
    """Conv/MatMul/Gemm nodes whose second input is a weight initializer (the INT8 candidates).

    Attention MatMuls multiply two activations and are left out by construction.
    """
    initializers = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type in QUANTIZED_OP_TYPES and len(n.input) > 1 and n.input[1] in initializers]


def attention_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose two inputs are both activations: the attention products q·kᵀ and attn·v."""
    initializers = {i.name for i in model.graph.initializer}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1
            and not any(i in initializers or i in constants for i in n.input[:2])]


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    return users


def residual_adds(model: onnx.ModelProto, layers: set[str] | None = None) -> list[tuple[str, str, int]]:
    """``(add, conv, other_input)`` for every Add TensorRT can fuse into the Conv feeding it directly.

    TensorRT folds ``Conv → Add`` into one INT8 kernel when the Conv's output goes nowhere else
    and the Add's other input is quantised (its Q/DQ is the fused kernel's residual read).
    ``layers`` limits the Convs to those quantised; the other input must be an activation.
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer, users = _producers(graph), _consumers(graph)
    outputs = {o.name for o in graph.output}
    found = []
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for k in (0, 1):
            conv = producer.get(add.input[k])
            other = add.input[1 - k]
            if conv is None or conv.op_type != "Conv" or (layers is not None and conv.name not in layers):
                continue
            if len(users.get(add.input[k], [])) != 1 or add.input[k] in outputs or other in initializers \
                    or other in constants:
                continue
            found.append((add.name, conv.name, 1 - k))
            break
    return found


def qdq_tensors(model: onnx.ModelProto, *, quantize_attention: bool = False) -> list[str]:
    """The activations :func:`build_qdq` quantises (its ranges' keys), in graph order.

    Inputs of every weighted layer, the residual input of every Add TensorRT fuses into a Conv
    and, with ``quantize_attention``, both inputs of the attention products.
    """
    graph = model.graph
    nodes = {n.name: n for n in graph.node}
    wanted = [nodes[name].input[0] for name in weighted_nodes(model)]
    wanted += [nodes[add].input[k] for add, _, k in residual_adds(model, set(weighted_nodes(model)))]
    if quantize_attention:
        wanted += [i for name in attention_matmuls(model) for i in nodes[name].input[:2]]
    rank = {n.name: index for index, n in enumerate(graph.node)}
    first_use: dict[str, int] = {}
    for node in graph.node:
        for i in node.input:
            first_use.setdefault(i, rank[node.name])
    return sorted(dict.fromkeys(wanted), key=lambda t: first_use.get(t, -1))


# Below this amax a tensor is treated as all zeros: its scale must still be positive (TensorRT's rule).
_AMAX_FLOOR = 1e-12


def _weight_axis(node: onnx.NodeProto, rank: int) -> int:
    """The weight's output-channel axis: Conv 0, Gemm 0 with transB else 1, MatMul the last."""
    if node.op_type == "MatMul":
        return rank - 1
    return _weight_output_axis(node)


def build_qdq(fp32: onnx.ModelProto, ranges: Mapping[str, float], *,
              quantize_attention: bool = False) -> onnx.ModelProto:
    """``fp32`` with Q/DQ pairs where TensorRT fuses them into INT8 kernels.

    Placement (NVIDIA's Q/DQ placement recommendations): the inputs of every weighted layer
    (Conv, Gemm, MatMul with a weight initializer), never their outputs, so a Conv's bias,
    activation and following Add run inside its kernel; weights per output channel
    (:func:`_weight_axis`), activations per tensor from ``ranges`` (amax, scale = amax / 127),
    symmetric INT8 with zero points 0. One Q/DQ pair per tensor, shared by its weighted
    consumers; other consumers keep reading the float tensor. A tensor entering a Concat is
    quantised after the Concat (the Concat's output is the layer input), so the Concat's
    inputs share that one scale; summed branches (the deploy form's segmentation head) each
    reach their own Conv and so get their own scale. The residual input of an Add fused into
    a Conv (:func:`residual_adds`) is quantised and nothing sits between the Conv and the Add.
    With ``quantize_attention`` both inputs of every attention product are quantised too.
    Weights stay float behind a Q/DQ pair (what TensorRT 8.5 to 10 parse).
    """
    out = onnx.ModelProto()
    out.CopyFrom(fp32)
    graph = out.graph
    missing = [t for t in qdq_tensors(fp32, quantize_attention=quantize_attention) if t not in ranges]
    if missing:
        raise ExportError(f"{graph.name or 'model'}: no calibrated range for {missing[0]!r}"
                          f"{f' (+{len(missing) - 1} more)' if len(missing) > 1 else ''}")
    nodes = {n.name: n for n in graph.node}
    weights = {i.name: i for i in graph.initializer}
    pending: dict[str, list[onnx.NodeProto]] = {}   # tensor → its Q/DQ nodes, emitted before its first reader
    quantised: dict[tuple[str, int | None], str] = {}
    initializers: list[onnx.TensorProto] = []

    def quantise(tensor: str, scale: np.ndarray, axis: int | None) -> str:
        key = (tensor, axis)
        if key not in quantised:
            stem = tensor if axis is None else f"{tensor}/axis{axis}"
            initializers.extend([numpy_helper.from_array(scale.astype(np.float32), f"{stem}/scale"),
                                 numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{stem}/zero_point")])
            extra = {} if axis is None else {"axis": axis}
            q_in = [tensor, f"{stem}/scale", f"{stem}/zero_point"]
            pending.setdefault(tensor, []).extend([
                onnx.helper.make_node("QuantizeLinear", q_in, [f"{stem}/quantized"], name=f"{stem}/QuantizeLinear",
                                      **extra),
                onnx.helper.make_node("DequantizeLinear", [f"{stem}/quantized", *q_in[1:]], [f"{stem}/dequantized"],
                                      name=f"{stem}/DequantizeLinear", **extra)])
            quantised[key] = f"{stem}/dequantized"
        return quantised[key]

    def activation(node: onnx.NodeProto, index: int) -> None:
        tensor = node.input[index]
        node.input[index] = quantise(tensor, np.array(max(float(ranges[tensor]), _AMAX_FLOOR) / 127.0), None)

    for name in weighted_nodes(fp32):
        node = nodes[name]
        weight = numpy_helper.to_array(weights[node.input[1]])
        axis = _weight_axis(node, weight.ndim)
        amax = np.abs(weight).max(axis=tuple(a for a in range(weight.ndim) if a != axis))
        node.input[1] = quantise(node.input[1], np.maximum(amax, _AMAX_FLOOR) / 127.0, axis)
        activation(node, 0)
    for add, _, index in residual_adds(fp32, set(weighted_nodes(fp32))):
        activation(nodes[add], index)
    if quantize_attention:
        for name in attention_matmuls(fp32):
            activation(nodes[name], 0)
            activation(nodes[name], 1)
    graph.initializer.extend(initializers)
    # Graph order stays topological: a Q/DQ pair follows its tensor's producer (weights and inputs first).
    sources = [t for t in pending if t in weights or t in {i.name for i in graph.input}]
    ordered = [n for tensor in sources for n in pending.pop(tensor)]
    for node in graph.node:
        ordered.append(node)
        for tensor in node.output:
            ordered.extend(pending.pop(tensor, []))
    if pending:
        raise ExportError(f"{graph.name or 'model'}: no producer of {next(iter(pending))!r} to place its Q/DQ after")
    del graph.node[:]
    graph.node.extend(ordered)
    return out


def quantize_modelopt(fp32_path: Path, output: Path, calibration: CalibrationSet, method: str,
                      exclude: list[str]) -> Path:
    """NVIDIA ModelOpt ONNX PTQ (INT8, CPU calibration through ONNX Runtime) with exclusions."""
    from modelopt.onnx.quantization import quantize

    quantize(str(fp32_path), quantize_mode="int8", calibration_data=calibration.stacked(),
             calibration_method={"max": "max"}.get(method, "entropy"), calibration_eps=["cpu"],
             op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_exclude=exclude,
             high_precision_dtype="fp32", output_path=str(output), log_level="WARNING")
    return output


def modelopt_available() -> bool:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except Exception:  # noqa: BLE001 - ModelOpt may fail on import for CUDA/cupy reasons too: treat as absent
        return False
    return True


def strip_qdq(model: onnx.ModelProto, keep: set[str]) -> onnx.ModelProto:
    """A copy of ``model`` where only nodes in ``keep`` read through Q/DQ pairs.

    Every other consumer of a DequantizeLinear is rewired to the tensor before the matching
    QuantizeLinear; Q/DQ nodes left without consumers are removed. An Add fed by a kept layer
    (directly, or through a Q/DQ pair) keeps its quantised inputs: TensorRT fuses it into a
    layer with the other input as the quantised residual.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producer = {o: n for n in graph.node for o in n.output}

    def from_kept(tensor: str) -> bool:
        node = producer.get(tensor)
        if node is not None and node.op_type == "DequantizeLinear" and producer.get(node.input[0]) is not None:
            node = producer.get(producer[node.input[0]].input[0])   # behind Q/DQ: the layer that made it
        return node is not None and node.name in keep

    fused = {n.name for n in graph.node if n.op_type == "Add" and any(from_kept(i) for i in n.input)}
    for node in graph.node:
        if node.name in keep or node.name in fused or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    node.input[i] = q.input[0]
    graph_outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return out


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Weighted nodes that read at least one input through a DequantizeLinear."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES
            and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)]


def _weight_output_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0 if node.op_type == "Conv" else 1


def trt_rule_violations(model: onnx.ModelProto) -> list[str]:
    """Where a Q/DQ graph breaks TensorRT's rules (empty list: conformant).

    Rules: INT8 only, every zero point 0, scales positive initializers, weights quantised per
    channel along the layer's output axis (Conv 0, MatMul 1, Gemm 0 with transB else 1); and
    the placement TensorRT fuses (:func:`placement_violations`).
    """
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems = []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(n.input[1])
        if scale is None or not np.all(scale > 0):
            problems.append(f"{n.name}: scale is not a positive initializer")
        zero = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zero is not None and (zero.dtype != np.int8 or np.any(zero != 0)):
            problems.append(f"{n.name}: zero point {zero.dtype} not all 0 int8")
        if n.op_type != "DequantizeLinear":
            continue
        q = producer.get(n.input[0])
        source = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else n.input[0]
        if source not in inits:
            continue  # activation: per-tensor is what TensorRT expects
        axis = next((a.i for a in n.attribute if a.name == "axis"), None)
        for user in consumers.get(n.output[0], []):
            if user.op_type in QUANTIZED_OP_TYPES and scale is not None and scale.size > 1 \
                    and axis != _weight_output_axis(user):
                problems.append(f"{user.name}: weight quantised on axis {axis}, output axis is {_weight_output_axis(user)}")
            if scale is not None and scale.size == 1 and user.op_type in QUANTIZED_OP_TYPES:
                problems.append(f"{user.name}: weight quantised per tensor, not per channel")
    return problems + placement_violations(model)


def placement_violations(model: onnx.ModelProto) -> list[str]:
    """Where Q/DQ placement keeps TensorRT from fusing it into INT8 kernels (empty: none).

    - a layer (Conv/Gemm/MatMul) reads one of its two operands quantised and the other float;
    - a Q/DQ on a layer's output feeds anything but layers (outputs stay unquantised, so the
      bias, activation and a following Add run in the layer's kernel); on the edge from a Conv to
      an Add it is the one thing that must not sit there;
    - an Add fed directly by a quantised Conv (its only reader) reads its other input float:
      TensorRT fuses the Add into the Conv only with that residual input quantised;
    - a Concat reads some inputs quantised and others not, or with different scales: TensorRT
      would requantise its output (share one scale, or quantise after the Concat).
    """
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer, users = _producers(graph), _consumers(graph)

    def dequantised(tensor: str) -> onnx.NodeProto | None:
        node = producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def source(dq: onnx.NodeProto) -> str:
        q = producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]

    def direct_conv(tensor: str) -> onnx.NodeProto | None:
        node = producer.get(tensor)
        return node if node is not None and node.op_type == "Conv" else None

    problems = []
    for n in graph.node:
        if n.op_type in QUANTIZED_OP_TYPES and len(n.input) > 1:
            flags = [dequantised(i) is not None for i in n.input[:2]]
            if flags[0] != flags[1]:
                problems.append(f"{n.name}: only its {'input' if flags[0] else 'weight'} is quantised, "
                                "TensorRT runs it in float")
        elif n.op_type == "Add" and len(n.input) == 2:
            for k in (0, 1):
                conv, other = direct_conv(n.input[k]), n.input[1 - k]
                if conv is None or len(users.get(n.input[k], [])) != 1 or dequantised(conv.input[0]) is None:
                    continue
                constant = other in inits or (other in producer and producer[other].op_type == "Constant")
                if dequantised(other) is None and not constant:
                    problems.append(f"{n.name}: residual input {other} is not quantised, TensorRT cannot fuse the "
                                    f"Add into {conv.name}")
                break
        elif n.op_type == "Concat":
            dqs = [dequantised(i) for i in n.input]
            if any(dqs):
                scales = [inits.get(dq.input[1]) if dq is not None else None for dq in dqs]
                if not all(dqs) or any(s is None or s.shape != scales[0].shape or not np.allclose(s, scales[0])
                                       for s in scales):
                    problems.append(f"{n.name}: Concat inputs quantised with different scales (or only some): "
                                    "TensorRT requantises; quantise after the Concat")
        elif n.op_type == "DequantizeLinear":
            layer = producer.get(source(n))
            if layer is None or layer.op_type not in QUANTIZED_OP_TYPES:
                continue
            for user in users.get(n.output[0], []):
                if user.op_type in QUANTIZED_OP_TYPES:
                    continue
                partner = user.op_type == "Add" and any(direct_conv(i) is not None for i in user.input)
                if user.op_type == "Add" and layer.op_type == "Conv" and not partner:
                    problems.append(f"{user.name}: Q/DQ between {layer.name} and its Add, TensorRT cannot fuse them")
                elif not partner:
                    problems.append(f"{layer.name}: output quantised into {user.name}; "
                                    "quantise layer inputs, not outputs")
    return problems


def save_with_metadata(model: onnx.ModelProto, metadata: dict[str, str], path: str | os.PathLike[str]) -> None:
    """Quantisers drop ``metadata_props``: put the contract back before saving."""
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
