"""What a graph costs per frame: multiply-adds by precision and the bytes its activations move.

The one multiply-add counter of the project. Calibration ranks layers by it, the build summary
and the benchmark report show where the work of each precision mode sits (INT8 / FP16 / FP32),
and ``metrics.jetson_floor`` turns the split into a roofline floor per Jetson.

Counting needs the graph (onnx, shape inference), which the target does not have: the
workstation stores the split as JSON in the ONNX metadata (``COST_KEY``, written by
``cost_metadata``) and the target reads it back with ``core.onnx_scan`` only (``read_cost``).
onnx is imported inside the functions that need it: this module is imported torch/onnx-free.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from mrfs_edge.core.onnx_scan import OnnxScan, scan_onnx

if TYPE_CHECKING:
    import onnx

Kind = Literal["weighted", "attention"]
Precision = Literal["int8", "fp16", "fp32"]
Storage = Literal["int8", "fp16", "fp32", "other"]   # how a tensor sits in memory ("other": int64 shapes, ...)
STORAGE: tuple[Storage, ...] = ("int8", "fp16", "fp32", "other")
PRECISIONS: tuple[Precision, ...] = ("int8", "fp16", "fp32")
KINDS: tuple[Kind, ...] = ("weighted", "attention")

# ONNX metadata key of the split's JSON, beside the contract's keys and "mrfs_edge.precision".
COST_KEY = "mrfs_edge.cost"
COST_VERSION = 1

# Bytes per element of onnx.TensorProto.DataType values (FLOAT, UINT8, INT8, UINT16, INT16, INT32,
# INT64, BOOL, FLOAT16, DOUBLE, UINT32, UINT64, BFLOAT16, FLOAT8 variants).
_ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2,
                  17: 1, 18: 1, 19: 1, 20: 1}
_FLOAT16 = 10
_COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Layout ops TensorRT moves Q/DQ across: a weight's DequantizeLinear may sit behind them.
_LAYOUT_OPS = ("Identity", "Transpose", "Reshape", "Unsqueeze", "Squeeze")
# Ops whose output is their data input seen another way: no memory of their own.
_PASS_THROUGH_OPS = ("DequantizeLinear", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


@dataclass(frozen=True)
class NodeCost:
    """One Conv/ConvTranspose/Gemm/MatMul node: its multiply-adds, what kind, how it runs."""

    name: str
    op_type: str
    macs: int
    kind: Kind
    precision: Precision
    output_bytes: int


@dataclass(frozen=True)
class PrecisionSplit:
    """Multiply-adds per kind and precision, and the bytes a frame moves.

    Bytes are counted at the element size a tensor is stored in: int8 after QuantizeLinear,
    float16 in the FP16 graph, float32 elsewhere. A DequantizeLinear or a view (Reshape, Flatten,
    Squeeze, Unsqueeze, Identity) stores nothing: its consumers read the tensor behind it (the
    int8 one behind a DequantizeLinear). A tensor read only by QuantizeLinear is stored in int8
    only (the producer writes int8).

    ``activation_bytes``: the graph as written. Every activation (graph inputs and node outputs
    that do not depend on weights alone) is written once and read once per consuming node, once
    more when it is a graph output. No fusion is assumed beyond the above, so an engine that
    fuses pointwise chains (TensorRT does) moves less: this is the traffic of the unfused graph.
    ``boundary_bytes``: the traffic left when everything but the matrix ops (Conv, ConvTranspose,
    Gemm, MatMul) is fused into them: each matrix op reads its activation operands once and
    writes its output once, plus the graph's inputs read and outputs written once. The floor's
    memory term (``metrics.jetson_floor``) uses it, with ``weight_bytes``.
    ``weight_bytes``: every initializer once, as the engine holds it: as stored (float16 in the FP16
    graph, int8 behind a DequantizeLinear), and int8 where only QuantizeLinear reads it (ONNX
    Runtime's Q/DQ graphs keep float weights behind a QuantizeLinear that TensorRT folds).
    ``bytes`` holds the three by storage type, so ``fp16_fallback`` can restate them for an engine
    built with FP16 allowed. ``unresolved``: matrix-op nodes whose shapes inference could not fix
    (dynamic axes): left out of every figure.
    """

    macs: dict[str, dict[str, int]]
    bytes: dict[str, dict[str, int]]   # "activation" | "boundary" | "weight" → {storage type: bytes}
    unresolved: int = 0
    has_qdq: bool = False
    is_fp16: bool = False
    nodes: int = 0        # the graph's node count, to tell it from a graph that copied its metadata

    @property
    def activation_bytes(self) -> int:
        return sum(self.bytes.get("activation", {}).values())

    @property
    def boundary_bytes(self) -> int:
        return sum(self.bytes.get("boundary", {}).values())

    @property
    def weight_bytes(self) -> int:
        return sum(self.bytes.get("weight", {}).values())

    def fp16_fallback(self) -> PrecisionSplit:
        """The split of an engine built with FP16 allowed (``--fp16`` from an FP32 graph, ``--best``).

        TensorRT then runs in FP16 what the graph leaves in FP32, except the contract's pins; the
        pins are LayerNorm/Softmax/reductions, none a matrix op, so every FP32 multiply-add and
        float32 tensor becomes FP16 (a pinned op's own tensors stay float32 in the engine: the
        bytes are a slight underestimate there).
        """
        macs = {k: {"int8": v.get("int8", 0), "fp16": v.get("fp16", 0) + v.get("fp32", 0), "fp32": 0}
                for k, v in self.macs.items()}
        moved = {what: {**tally, "fp16": tally.get("fp16", 0) + tally.get("fp32", 0) // 2, "fp32": 0}
                 for what, tally in self.bytes.items()}
        return PrecisionSplit(macs, moved, self.unresolved, self.has_qdq, self.is_fp16, self.nodes)

    def gmacs(self, kind: Kind | None = None, precision: Precision | None = None) -> float:
        kinds = (kind,) if kind else KINDS
        precisions = (precision,) if precision else PRECISIONS
        return sum(self.macs.get(k, {}).get(p, 0) for k in kinds for p in precisions) / 1e9

    @property
    def total_gmacs(self) -> float:
        return self.gmacs()

    @property
    def weighted_int8_fraction(self) -> float:
        """INT8 share of the multiply-adds in layers with weights (the issue's 95% target)."""
        weighted = self.gmacs("weighted")
        return self.gmacs("weighted", "int8") / weighted if weighted else 0.0

    @property
    def int8_fraction(self) -> float:
        """INT8 share of all multiply-adds, attention products included."""
        total = self.total_gmacs
        return self.gmacs(None, "int8") / total if total else 0.0

    def to_json(self) -> str:
        return json.dumps({"v": COST_VERSION, "macs": self.macs, "bytes": self.bytes, "unresolved": self.unresolved,
                           "qdq": self.has_qdq, "fp16": self.is_fp16, "nodes": self.nodes}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PrecisionSplit:
        """The split ``to_json`` wrote; ValueError on anything else (a newer version included)."""
        try:
            data = json.loads(text)
            if data.get("v") != COST_VERSION:
                raise ValueError(f"cost metadata version {data.get('v')!r}, this toolkit reads {COST_VERSION}")
            macs = {str(k): {str(p): int(n) for p, n in v.items()} for k, v in data["macs"].items()}
            tallies = {str(k): {str(t): int(n) for t, n in v.items()} for k, v in data["bytes"].items()}
            return cls(macs, tallies, int(data["unresolved"]), bool(data["qdq"]), bool(data["fp16"]),
                       int(data["nodes"]))
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed cost metadata ({exc})") from None


@dataclass
class _Graph:
    """The facts of an inferred graph the counters share."""

    shapes: dict[str, list[int]]
    types: dict[str, int]
    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    constants: set[str]
    outputs: set[str]
    inputs: list[str]
    nodes: list[onnx.NodeProto]


def _inferred_graph(model: onnx.ModelProto) -> _Graph:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(copy)
    graph = inferred.graph
    shapes: dict[str, list[int]] = {}
    types: dict[str, int] = {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        tensor = value.type.tensor_type
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        types[value.name] = tensor.elem_type
    constants = set()
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
        constants.add(init.name)
    producer, consumers = {}, {}
    for node in graph.node:
        for name in node.output:
            producer[name] = node
        for name in dict.fromkeys(i for i in node.input if i):
            consumers.setdefault(name, []).append(node)
        # Weights alone (a DQ of an int8 initializer, a Cast of an FP16 one, a Constant) are no activation.
        if all(i in constants for i in node.input if i):
            constants.update(node.output)
    inputs = [i.name for i in graph.input if i.name not in constants]
    return _Graph(shapes, types, producer, consumers, constants, {o.name for o in graph.output}, inputs,
                  list(graph.node))


def _through_dq(graph: _Graph, name: str) -> bool:
    """``name`` is a DequantizeLinear's output (the layer reads INT8), looking through a weight's layout ops."""
    node = graph.producer.get(name)
    while node is not None and node.op_type in _LAYOUT_OPS and name in graph.constants:
        name = node.input[0]
        node = graph.producer.get(name)
    return node is not None and node.op_type == "DequantizeLinear"


def _numel(shape: list[int] | None) -> int:
    if shape is None or 0 in shape:
        return 0
    count = 1
    for d in shape:
        count *= d
    return count


def _macs(graph: _Graph, node: onnx.NodeProto, weight_index: int) -> int:
    """Multiply-adds of one node from its output and weight/second-operand shapes; 0 when unknown."""
    out = graph.shapes.get(node.output[0])
    operand = graph.shapes.get(node.input[weight_index])
    if not out or not operand or 0 in out or 0 in operand:
        return 0
    if node.op_type == "Conv":
        per_output = _numel(operand[1:])          # (in_channels / groups) × kh × kw
    elif node.op_type == "ConvTranspose":
        # Each input element meets out_channels/groups × kh × kw weights: count from the input side.
        data = graph.shapes.get(node.input[0])
        if not data or 0 in data:
            return 0
        return _numel(data) * _numel(operand[1:])
    elif node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        per_output = operand[1] if trans_b else operand[0]
    elif weight_index == 0:                       # MatMul(W, x): the reduced axis is W's last
        per_output = operand[-1]
    else:
        per_output = operand[-2] if len(operand) >= 2 else operand[0]
    return _numel(out) * per_output


def _node_precision(graph: _Graph, node: onnx.NodeProto, operands: list[str]) -> Precision:
    if all(_through_dq(graph, name) for name in operands):
        return "int8"
    return "fp16" if graph.types.get(node.output[0]) == _FLOAT16 else "fp32"


def _tensor_bytes(graph: _Graph, name: str) -> int:
    return _numel(graph.shapes.get(name)) * _ELEMENT_BYTES.get(graph.types.get(name, 1), 4)


def _costs(graph: _Graph) -> tuple[list[NodeCost], int]:
    costs, unresolved = [], 0
    for node in graph.nodes:
        if node.op_type not in _COUNTED_OPS or len(node.input) < 2:
            continue
        # A weight is any operand computed from initializers/constants alone (an initializer, its
        # DequantizeLinear, an FP16 graph's Cast in front of a node pinned to FP32, a transpose).
        constant = [name in graph.constants for name in node.input[:2]]
        weighted = node.op_type != "MatMul" or any(constant)
        weight_index = 0 if node.op_type == "MatMul" and constant[0] and not constant[1] else 1
        macs = _macs(graph, node, weight_index)
        if not macs:
            unresolved += 1
            continue
        costs.append(NodeCost(node.name, node.op_type, macs, "weighted" if weighted else "attention",
                              _node_precision(graph, node, list(node.input[:2])),
                              sum(_tensor_bytes(graph, o) for o in node.output if o)))
    return costs, unresolved


def graph_costs(model: onnx.ModelProto) -> list[NodeCost]:
    """Every Conv/ConvTranspose/Gemm/MatMul node with static shapes, in graph order.

    Weighted: a Conv/ConvTranspose/Gemm, or a MatMul with a weight operand (an initializer,
    possibly behind DequantizeLinear or a Cast). Attention: a MatMul of two activations.
    Precision: INT8 when both operands come through DequantizeLinear, FP16 when the node's
    output is float16 (the FP16 graph; its FP32 pins stay FP32), else FP32.
    """
    return _costs(_inferred_graph(model))[0]


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-adds by node name (weighted and attention), as calibration ranks layers by them."""
    return {cost.name: cost.macs for cost in graph_costs(model)}


def _passes_through(node: onnx.NodeProto, name: str) -> bool:
    """``node`` stores nothing of its own for its data input ``name`` (a DequantizeLinear or a view)."""
    return node.op_type in _PASS_THROUGH_OPS and bool(node.input) and node.input[0] == name


def _reads(graph: _Graph, name: str) -> int:
    """Reads of ``name`` from memory: one per consumer, a pass-through consumer's own consumers counted instead."""
    count = 1 if name in graph.outputs else 0
    for node in graph.consumers.get(name, []):
        count += _reads(graph, node.output[0]) if _passes_through(node, name) else 1
    return count


def _final_consumers(graph: _Graph, name: str) -> list[onnx.NodeProto]:
    """The nodes that read ``name``'s data, looking through pass-through consumers."""
    found = []
    for node in graph.consumers.get(name, []):
        found += _final_consumers(graph, node.output[0]) if _passes_through(node, name) else [node]
    return found


def _stored(graph: _Graph, name: str) -> bool:
    """``name`` is written to memory: an activation, not a pass-through's output, not int8 only."""
    if name in graph.constants:
        return False
    if name in graph.inputs:
        return True     # the host's copy, whatever reads it
    producer = graph.producer.get(name)
    if producer is not None and _passes_through(producer, producer.input[0]) \
            and producer.input[0] not in graph.constants:
        return False
    consumers = _final_consumers(graph, name)
    return not (consumers and name not in graph.outputs and all(c.op_type == "QuantizeLinear" for c in consumers))


def _source(graph: _Graph, name: str) -> str:
    """The stored tensor behind ``name`` (through DequantizeLinear and views)."""
    producer = graph.producer.get(name)
    while producer is not None and _passes_through(producer, producer.input[0]) and \
            producer.input[0] not in graph.constants:
        name = producer.input[0]
        producer = graph.producer.get(name)
    return name


def _storage(elem_type: int | None) -> Storage:
    return {1: "fp32", 10: "fp16", 2: "int8", 3: "int8"}.get(elem_type or 0, "other")


def _tally(graph: _Graph, name: str) -> tuple[Storage, int]:
    return _storage(graph.types.get(name)), _tensor_bytes(graph, name)


def _stored_bytes(graph: _Graph, name: str) -> tuple[Storage, int]:
    """``name`` as it sits in memory: a float tensor that only QuantizeLinear reads is int8."""
    source = _source(graph, name)
    if _stored(graph, source):
        return _tally(graph, source)
    return "int8", _numel(graph.shapes.get(source))   # written as int8 by a fused QuantizeLinear


def _weight_bytes(graph: _Graph, name: str) -> tuple[Storage, int]:
    """An initializer as the engine holds it: int8 when only QuantizeLinear reads it (folded at build)."""
    consumers = graph.consumers.get(name, [])
    if consumers and all(c.op_type == "QuantizeLinear" and c.input[0] == name for c in consumers):
        return "int8", _numel(graph.shapes.get(name))
    return _tally(graph, name)


def _sum(items: Iterable[tuple[Storage, int]]) -> dict[str, int]:
    totals = dict.fromkeys(STORAGE, 0)
    for storage, count in items:
        totals[storage] += count
    return totals


def _activation_bytes(graph: _Graph) -> dict[str, int]:
    names = list(graph.inputs) + [o for n in graph.nodes for o in n.output if o]
    return _sum((_storage(graph.types.get(name)), _tensor_bytes(graph, name) * (1 + _reads(graph, name)))
                for name in names if _stored(graph, name))


def _boundary_bytes(graph: _Graph) -> dict[str, int]:
    names = list(graph.inputs) + [name for name in graph.outputs if name not in graph.constants]
    for node in graph.nodes:
        if node.op_type in _COUNTED_OPS:
            names += [name for name in node.input[:2] if name and name not in graph.constants]
            names += [name for name in node.output if name]
    return _sum(_stored_bytes(graph, name) for name in names)


def precision_split(model: onnx.ModelProto) -> PrecisionSplit:
    """Multiply-adds per kind and precision and the bytes of one inference of ``model``."""
    graph = _inferred_graph(model)
    costs, unresolved = _costs(graph)
    macs: dict[str, dict[str, int]] = {k: {p: 0 for p in PRECISIONS} for k in KINDS}
    for cost in costs:
        macs[cost.kind][cost.precision] += cost.macs
    tallies = {"activation": _activation_bytes(graph), "boundary": _boundary_bytes(graph),
               "weight": _sum(_weight_bytes(graph, init.name) for init in model.graph.initializer)}
    op_types = {n.op_type for n in graph.nodes}
    has_qdq = bool(op_types & {"QuantizeLinear", "DequantizeLinear"})
    is_fp16 = any(init.data_type == _FLOAT16 for init in model.graph.initializer)
    return PrecisionSplit(macs, tallies, unresolved, has_qdq, is_fp16, len(model.graph.node))


def cost_metadata(model: onnx.ModelProto) -> str:
    """The JSON to store under ``COST_KEY`` in ``model``'s metadata before saving it."""
    return precision_split(model).to_json()


def set_cost_metadata(model: onnx.ModelProto, counted: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """Store the split under ``COST_KEY`` in ``model`` in place (replacing an older entry); returns ``model``.

    ``counted``: the graph to count when it is not ``model`` itself, e.g. a copy of a dynamic-shape
    graph with its inputs fixed to the contract's optimum shape (shapes must be static to count).
    """
    value = cost_metadata(counted if counted is not None else model)
    for prop in model.metadata_props:
        if prop.key == COST_KEY:
            prop.value = value
            return model
    entry = model.metadata_props.add()
    entry.key, entry.value = COST_KEY, value
    return model


def read_cost(source: OnnxScan | str | os.PathLike[str]) -> PrecisionSplit | None:
    """The split stored in an ONNX file's metadata, onnx-free; None when absent or stale.

    Stale: the stored split's node count, Q/DQ or FP16 disagrees with the file (a graph derived
    from another that copied its metadata without recounting): a wrong figure is worse than none.
    """
    scan = source if isinstance(source, OnnxScan) else scan_onnx(source)
    text = scan.metadata.get(COST_KEY)
    if not text:
        return None
    try:
        split = PrecisionSplit.from_json(text)
    except ValueError:
        return None
    if (split.nodes, split.has_qdq, split.is_fp16) != (scan.node_count, scan.has_qdq, scan.is_fp16):
        return None
    return split


def engine_split(split: PrecisionSplit, precision: str) -> PrecisionSplit:
    """What an engine built at ``precision`` (fp32 | fp16 | int8 | best) from the graph of ``split`` runs.

    fp16 and best let TensorRT run an FP32-typed graph's FP32 layers in FP16
    (``PrecisionSplit.fp16_fallback``); an FP16 graph's FP32 parts are its pins and stay FP32;
    fp32 and int8 (INT8 layers, FP32 elsewhere) run a Q/DQ graph's own precisions. int8 or best
    from a graph without Q/DQ is implicit quantisation: TensorRT picks each layer's precision at
    build time from its calibrator's ranges, so the split takes every matrix op as INT8 (the
    fastest it can choose: the floor stays a floor) and the tensors as the graph (or FP16) stores them.
    """
    result = split.fp16_fallback() if precision in ("fp16", "best") and not split.is_fp16 else split
    if precision in ("int8", "best") and not split.has_qdq:
        macs = {kind: {"int8": sum(tally.values()), "fp16": 0, "fp32": 0} for kind, tally in result.macs.items()}
        result = replace(result, macs=macs)
    return result


def cost_of_onnx(path: str | os.PathLike[str]) -> PrecisionSplit | None:
    """The split of an ONNX file: from its metadata, else counted when onnx is installed, else None.

    The target (no onnx) relies on the metadata the workstation stored; the workstation counts a
    graph saved without it (another tool's export, an older toolkit).
    """
    split = read_cost(path)
    if split is not None:
        return split
    try:
        import onnx
    except ImportError:
        return None
    return precision_split(onnx.load(str(path)))
