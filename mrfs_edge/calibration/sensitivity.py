"""Layer-group sensitivity to INT8 and the mixed-precision choice that meets a budget.

When the fully quantised graph misses the budget, each block of the network is quantised alone
and its damage measured against the FP32 model; the most damaging groups per multiply-add are
then kept in higher precision until the budget holds, keeping as many multiply-adds in INT8 as
possible.

Every trial is a variant of one Q/DQ graph, so all of them run in one ONNX Runtime session: each
Q/DQ pair a group's layers read through goes behind a ``Where`` on a boolean graph input, the
group's gate (:func:`gated_graph`). A trial is a feed of gates, not a new graph to copy, serialise
and load; the FP32 reference is the same session with every gate off.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mrfs_edge.calibration.options import Budget
from mrfs_edge.metrics.agreement import AgreementScore
from mrfs_edge.processing.postprocess import argmax_classes

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
GATE_PREFIX = "mrfs_edge.int8_gate."

_GROUP_RULES: tuple[tuple[str, Callable[[re.Match[str]], str]], ...] = (
    (r"backbone/extra_patch_embed(\d)", lambda m: f"infrared patch-embed {m[1]}"),
    (r"backbone/extra_(?:block|norm)(\d)", lambda m: f"infrared blocks {m[1]}"),
    (r"backbone/patch_embed(\d)", lambda m: f"visible patch-embed {m[1]}"),
    (r"backbone/(?:block|norm)(\d)", lambda m: f"visible blocks {m[1]}"),
    (r"backbone/IGMAVCs\.(\d)", lambda m: f"IGM-Att {int(m[1]) + 1}"),
    (r"backbone/PCASCs\.(\d)", lambda m: f"PC-Att {int(m[1]) + 1}"),
    (r"decode_head/linear_c\d", lambda m: "segmentation head MLPs"),
    (r"decode_head", lambda m: "segmentation head fuse+pred"),
    (r"aux_head/PointConv", lambda m: "fusion head point convs"),
    (r"aux_head", lambda m: "fusion head CNN_fuse"),
)


def group_of(node_name: str) -> str:
    """The network block a node belongs to, from the module path the exporter put in its name."""
    for pattern, label in _GROUP_RULES:
        match = re.search(pattern, node_name)
        if match:
            return label(match)
    return "other"


def _float_source(producer: Mapping[str, onnx.NodeProto], name: str) -> str | None:
    """The float tensor behind ``name`` when ``name`` is the output of a Q→DQ pair, else None."""
    dq = producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def qdq_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Network block → the nodes of a Q/DQ graph that read at least one input through a Q→DQ pair.

    These are the INT8 layers and whatever else reads INT8 (a residual Add or a Concat TensorRT
    fuses): keeping a group high takes every one of its nodes off its Q/DQ pairs.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    group_by_node: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in _QDQ_OPS or not any(_float_source(producer, i) for i in node.input):
            continue
        # A residual Add goes with the layer feeding it: TensorRT fuses the two into one kernel.
        layer = next((producer[i].name for i in node.input if node.op_type == "Add" and i in producer
                      and producer[i].name in group_by_node), None)
        group_by_node[node.name] = group_by_node[layer] if layer else group_of(node.name)
    groups: dict[str, list[str]] = {}
    for name, group in group_by_node.items():
        groups.setdefault(group, []).append(name)
    return groups


def _fake_quantized(weight: np.ndarray, q: onnx.NodeProto, initializers: Mapping[str, onnx.TensorProto]) -> np.ndarray:
    """``DequantizeLinear(QuantizeLinear(weight))`` as the ONNX operators compute it (INT8, zero point 0)."""
    scale = numpy_helper.to_array(initializers[q.input[1]]).astype(np.float32)
    if scale.ndim:
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return (np.clip(np.round(weight / scale), -128, 127) * scale).astype(np.float32)


def gated_graph(model: onnx.ModelProto, groups: Mapping[str, Collection[str]]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of Q/DQ ``model`` where each group's Q/DQ pairs are switched by a boolean graph input.

    Every input a group's node reads through a Q→DQ pair becomes ``Where(gate, dequantized,
    float)``: with the gate on the node reads INT8 values, with it off exactly the float tensor
    (``Where`` selects, it does not compute), so one session runs every mixed-precision variant
    and the FP32 model. A weight's Q→DQ pair is folded into a constant of its INT8 values first
    (the same numbers, not recomputed on every run). Returns the graph and ``{group: gate input
    name}``.
    """
    gated = onnx.ModelProto()
    gated.CopyFrom(model)
    graph = gated.graph
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {init.name: init for init in graph.initializer}
    folded: dict[str, str] = {}   # weight DQ output → constant holding its INT8 values

    def int8_values(name: str, source: str) -> str:
        if source not in initializers:
            return name
        if name not in folded:
            q = producer[producer[name].input[0]]
            weight = numpy_helper.to_array(initializers[source])
            graph.initializer.append(numpy_helper.from_array(_fake_quantized(weight, q, initializers), f"{name}/int8"))
            folded[name] = f"{name}/int8"
        return folded[name]
    gates = {group: f"{GATE_PREFIX}{index}" for index, group in enumerate(sorted(groups))}
    group_by_node = {name: group for group, names in groups.items() for name in names}
    switched: dict[tuple[str, str], str] = {}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        group = group_by_node.get(node.name)
        for slot, name in enumerate(node.input if group is not None else ()):
            source = _float_source(producer, name)
            if source is None:
                continue
            if (name, group) not in switched:
                output = f"{name}/{gates[group]}"
                nodes.append(helper.make_node("Where", [gates[group], int8_values(name, source), source], [output],
                                              name=f"{output}/Where"))
                switched[(name, group)] = output
            node.input[slot] = switched[(name, group)]
        nodes.append(node)
    outputs = {o.name for o in graph.output}
    while True:   # a folded weight's Q and DQ now feed nothing
        used = {i for n in nodes for i in n.input} | outputs
        live = [n for n in nodes if n.op_type not in _QDQ_OPS or any(o in used for o in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.extend(helper.make_tensor_value_info(gate, TensorProto.BOOL, []) for gate in gates.values())
    return gated, gates


def scoring_session(model: onnx.ModelProto | Path, threads: int = 0):
    """An ONNX Runtime CPU session that runs Q/DQ as plain float arithmetic (TensorRT's numerics).

    ONNX Runtime's own INT8 kernels (its Q/DQ fusions) round and saturate differently from
    TensorRT's exact INT8 products with 32-bit accumulation; dequantised values multiplied in
    float are what TensorRT computes up to float rounding, so fusions are turned off. Without
    the CPU memory arena a B0 session at 480×640 peaks about 0.25 GB lower (the arena keeps
    its largest extension for good), at no measurable cost in speed.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    if threads:
        options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@dataclass
class GroupResult:
    name: str
    nodes: list[str]
    macs: int
    agreement: float
    psnr: float
    damage: float


@dataclass
class MixedPrecisionResult:
    quantized_groups: list[str]
    kept_high: list[str]
    int8_mac_fraction: float
    agreement: float
    psnr: float
    met: bool
    groups: list[GroupResult] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)


class QuantEvaluator:
    """Scores mixed-precision variants of one Q/DQ graph against FP32 on a few fixed feeds.

    One ONNX Runtime session over :func:`gated_graph`; of the FP32 reference only each feed's
    class map and fused image are kept (not the logits), and a trial's outputs are dropped feed
    by feed, so memory stays that of one session whatever the number of trials.
    """

    def __init__(self, qdq: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]],
                 groups: Mapping[str, Collection[str]] | None = None, threads: int = 0) -> None:
        self.groups = {name: list(nodes) for name, nodes in (qdq_groups(qdq) if groups is None else groups).items()}
        gated, self._gates = gated_graph(qdq, self.groups)
        self._session = scoring_session(gated, threads)
        del gated
        self.feeds = list(feeds)
        self._reference = [self._run(feed, frozenset()) for feed in self.feeds]

    def _run(self, feed: dict[str, np.ndarray], quantised: Collection[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        gates = {gate: np.array(group in quantised) for group, gate in self._gates.items()}
        seg, fused = self._session.run(None, {**feed, **gates})
        return [(argmax_classes(seg[i]) if seg.ndim == 4 else seg[i], fused[i]) for i in range(seg.shape[0])]

    def score(self, quantised: Collection[str]) -> AgreementScore:
        """Agreement with FP32 when the groups named in ``quantised`` read INT8 and the rest float."""
        unknown = set(quantised) - set(self._gates)
        if unknown:
            raise KeyError(f"no Q/DQ group named {min(unknown)!r}")
        score = AgreementScore()
        for feed, reference in zip(self.feeds, self._reference):
            for (ref_seg, ref_fused), (seg, fused) in zip(reference, self._run(feed, quantised)):
                score.update(ref_seg, seg, ref_fused, fused)
        return score


def group_sensitivity(evaluator: QuantEvaluator, budget: Budget, macs: Mapping[str, int],
                      progress: Callable[[Iterable[str]], Iterable[str]] = lambda x: x) -> list[GroupResult]:
    """Quantise one group at a time (the others in float) and measure its damage.

    ``macs`` are the multiply-adds the INT8 share is counted over (the weighted layers'); a
    group's are those of its nodes.
    """
    results = []
    for group in progress(sorted(evaluator.groups)):
        nodes = evaluator.groups[group]
        score = evaluator.score({group})
        agreement, psnr = score.pixel_agreement, score.fused_psnr
        results.append(GroupResult(group, nodes, sum(macs.get(n, 0) for n in nodes), agreement, psnr,
                                   budget.damage(agreement, psnr)))
    return results


def select_mixed_precision(evaluator: QuantEvaluator, budget: Budget, groups: list[GroupResult],
                           total_macs: int, tick: Callable[[], object] = lambda: None) -> MixedPrecisionResult:
    """Keep as few multiply-adds high as the budget allows.

    Two rankings are tried, damage per multiply-add (many cheap groups) and damage alone (one
    costly group that does most of the harm, such as the segmentation head's fuse layer); for
    each, the smallest prefix kept high that meets the budget (with margin) on the evaluation
    feeds is found by bisection, assuming damage grows with the groups quantised. The better
    of the two is then pruned: each kept group, largest first, goes back to INT8 if the budget
    still holds without it. ``tick`` is called once per variant scored (a progress bar's update).
    ``total_macs`` is what the INT8 share is a share of.
    """
    total_macs = total_macs or 1
    steps: list[dict[str, object]] = []
    cache: dict[frozenset[str], tuple[float, float]] = {}

    def fraction(kept: list[GroupResult]) -> float:
        return sum(g.macs for g in groups if g not in kept) / total_macs

    def meets(kept: list[GroupResult]) -> bool:
        key = frozenset(g.name for g in kept)
        if key not in cache:
            score = evaluator.score(frozenset(g.name for g in groups if g not in kept))
            cache[key] = (score.pixel_agreement, score.fused_psnr)
            tick()
            steps.append({"kept_high": sorted(key), "agreement": cache[key][0], "psnr": cache[key][1],
                          "int8_mac_fraction": fraction(kept)})
        return budget.met(*cache[key], margin=True)

    def shortest_prefix(ranked: list[GroupResult]) -> list[GroupResult]:
        low, high = 0, len(ranked)   # invariant: prefix `high` meets the budget (all high trivially does)
        while low < high:
            mid = (low + high) // 2
            if meets(ranked[:mid]):
                high = mid
            else:
                low = mid + 1
        return ranked[:high]

    candidates = [shortest_prefix(sorted(groups, key=key, reverse=True))
                  for key in (lambda g: g.damage / max(g.macs, 1), lambda g: g.damage)]
    kept = max(candidates, key=fraction)
    for group in sorted(kept, key=lambda g: g.macs, reverse=True):
        trial = [g for g in kept if g is not group]
        if meets(trial):
            kept = trial
    agreement, psnr = cache.get(frozenset(g.name for g in kept), (1.0, float("inf")))
    return MixedPrecisionResult(
        quantized_groups=[g.name for g in groups if g not in kept], kept_high=[g.name for g in kept],
        int8_mac_fraction=fraction(kept), agreement=agreement, psnr=psnr,
        met=budget.met(agreement, psnr) and fraction(kept) >= budget.min_int8_mac_fraction,
        groups=groups, steps=steps)
