"""Layer-group sensitivity to INT8 and the mixed-precision choice that meets a budget.

Plain post-training quantisation of the whole cascade loses too much (segmentation argmax
and fused image both move), so each block of the network is quantised alone and its damage
measured against the FP32 model; the most damaging groups per multiply-add are then kept in
higher precision until the accuracy budget holds, keeping as many multiply-adds in INT8 as
possible.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx

from mrfs_edge.calibration.options import Budget
from mrfs_edge.calibration.qdq import QUANTIZED_OP_TYPES, strip_qdq
from mrfs_edge.metrics.agreement import AgreementScore

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


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-adds of every Conv/MatMul/Gemm node (static shapes, from shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = {}
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES:
            continue
        out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
        if not out or not weight or 0 in out:
            continue
        if node.op_type == "Conv":
            per_output = int(np.prod(weight[1:]))  # (in_channels / groups) × kh × kw
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            per_output = weight[1] if trans_b else weight[0]
        else:
            per_output = weight[-2] if len(weight) >= 2 else weight[0]
        macs[node.name] = int(np.prod(out)) * int(per_output)
    return macs


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
    quantized_nodes: list[str]
    kept_high: list[str]
    int8_mac_fraction: float
    agreement: float
    psnr: float
    met: bool
    groups: list[GroupResult] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)


class QuantEvaluator:
    """Scores Q/DQ variants against FP32 outputs on a few fixed feeds (ONNX Runtime, CPU)."""

    def __init__(self, fp32: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], threads: int = 0) -> None:
        self.feeds = feeds
        self.threads = threads
        reference = self._session(fp32) if feeds else None
        self.reference = [reference.run(None, feed) for feed in feeds] if reference else []

    def _session(self, model: onnx.ModelProto):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def score(self, model: onnx.ModelProto) -> AgreementScore:
        session = self._session(model)
        score = AgreementScore()
        for feed, (ref_seg, ref_fused) in zip(self.feeds, self.reference):
            seg, fused = session.run(None, feed)
            for i in range(seg.shape[0]):
                score.update(ref_seg[i], seg[i], ref_fused[i], fused[i])
        return score


def group_sensitivity(full_qdq: onnx.ModelProto, evaluator: QuantEvaluator, budget: Budget,
                      candidates: list[str], macs: dict[str, int],
                      progress: Callable[[Iterable[str]], Iterable[str]] = lambda x: x) -> list[GroupResult]:
    """Quantise one group at a time (others in FP32) and measure its damage."""
    groups: dict[str, list[str]] = {}
    for name in candidates:
        groups.setdefault(group_of(name), []).append(name)
    results = []
    for group in progress(sorted(groups)):
        score = evaluator.score(strip_qdq(full_qdq, set(groups[group])))
        agreement, psnr = score.pixel_agreement, score.fused_psnr
        results.append(GroupResult(group, groups[group], sum(macs.get(n, 0) for n in groups[group]),
                                   agreement, psnr, budget.damage(agreement, psnr)))
    return results


def select_mixed_precision(full_qdq: onnx.ModelProto, evaluator: QuantEvaluator, budget: Budget,
                           groups: list[GroupResult], macs: dict[str, int],
                           tick: Callable[[], object] = lambda: None) -> MixedPrecisionResult:
    """Keep as few multiply-adds high as the budget allows.

    Two rankings are tried, damage per multiply-add (many cheap groups) and damage alone (one
    costly group that does most of the harm, such as the segmentation head's fuse layer); for
    each, the smallest prefix kept high that meets the budget (with margin) on the evaluation
    feeds is found by bisection, assuming damage grows with the groups quantised. The better
    of the two is then pruned: each kept group, largest first, goes back to INT8 if the budget
    still holds without it. ``tick`` is called once per variant scored (a progress bar's update).
    """
    total_macs = sum(macs.values()) or 1
    steps: list[dict[str, object]] = []
    cache: dict[frozenset[str], tuple[float, float]] = {}

    def fraction(kept: list[GroupResult]) -> float:
        return sum(g.macs for g in groups if g not in kept) / total_macs

    def meets(kept: list[GroupResult]) -> bool:
        key = frozenset(g.name for g in kept)
        if key not in cache:
            quantised = {n for g in groups if g not in kept for n in g.nodes}
            score = evaluator.score(strip_qdq(full_qdq, quantised))
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
        quantized_nodes=[n for g in groups if g not in kept for n in g.nodes], kept_high=[g.name for g in kept],
        int8_mac_fraction=fraction(kept), agreement=agreement, psnr=psnr,
        met=budget.met(agreement, psnr) and fraction(kept) >= budget.min_int8_mac_fraction,
        groups=groups, steps=steps)
