"""TensorRT ONNX-parser compatibility report for an exported graph (onnx package only).

The table records, per op type this network family produces (plus the Q/DQ ops of INT8
graphs), whether the ONNX parser of TensorRT 8.5 (JetPack 5), 8.6 (JetPack 6.0) and 10.x
(JetPack 6.1+) accepts it, from the onnx-tensorrt ``docs/operators.md`` of each release.
Beyond op support the report flags what is known to break engines: INT64 tensors
(TensorRT casts them to INT32), Reshapes whose target shape is computed at run time,
Resizes with run-time sizes, opsets newer than a parser knows, and FP16 overflow risks.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

VERSIONS = ("8.5", "8.6", "10.x")
MAX_OPSET = {"8.5": 17, "8.6": 17, "10.x": 20}

_ALL = {v: True for v in VERSIONS}
# Ops whose support differs between releases; everything in _COMMON parses on all three.
_DIFFERENT: dict[str, dict[str, bool]] = {
    "LayerNormalization": {"8.5": False, "8.6": True, "10.x": True},
    "GroupNormalization": {"8.5": False, "8.6": False, "10.x": True},
    "Gelu": {"8.5": False, "8.6": False, "10.x": True},
}
_COMMON = (
    "Add", "ArgMax", "BatchNormalization", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv",
    "DequantizeLinear", "Div", "Equal", "Erf", "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool",
    "GlobalMaxPool", "Identity", "MatMul", "Max", "Mul", "Pow", "QuantizeLinear", "Range", "ReduceMax",
    "ReduceMean", "Relu", "Reshape", "Resize", "Round", "Shape", "Sigmoid", "Slice", "Softmax", "Split",
    "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where", "Clip", "Min", "Neg", "Tile",
)
SUPPORT: dict[str, dict[str, bool]] = {**{op: _ALL for op in _COMMON}, **_DIFFERENT}
FP16_RISK_OPS = {"LayerNormalization": "variance overflows FP16 for activations above ~256",
                 "ReduceMean": "large reductions lose precision in FP16",
                 "Pow": "squares overflow FP16 above ~256", "Softmax": "exp of large logits overflows FP16"}


@dataclass
class CompatReport:
    opset: int
    op_counts: dict[str, int]
    support: dict[str, dict[str, bool | None]]
    int64_tensors: list[str] = field(default_factory=list)
    dynamic_reshapes: list[str] = field(default_factory=list)
    dynamic_resizes: list[str] = field(default_factory=list)
    fp16_risks: dict[str, str] = field(default_factory=dict)

    def blockers(self, version: str) -> list[str]:
        """Reasons the graph will not parse on ``version`` (empty when it should)."""
        out = [f"op {op} not supported" for op, row in self.support.items() if row.get(version) is False]
        out += [f"op {op} not in the support table (check onnx-tensorrt operators.md)"
                for op, row in self.support.items() if row.get(version) is None]
        if self.opset > MAX_OPSET[version]:
            out.append(f"opset {self.opset} > {MAX_OPSET[version]}")
        return out

    def as_dict(self) -> dict[str, object]:
        return {"opset": self.opset, "op_counts": self.op_counts, "support": self.support,
                "parses_on": {v: not self.blockers(v) for v in VERSIONS},
                "blockers": {v: self.blockers(v) for v in VERSIONS},
                "int64_tensors": self.int64_tensors, "dynamic_reshapes": self.dynamic_reshapes,
                "dynamic_resizes": self.dynamic_resizes, "fp16_risks": self.fp16_risks}

    def text(self) -> str:
        mark = {True: "yes", False: "NO", None: "?"}
        lines = [f"TensorRT ONNX-parser compatibility (opset {self.opset})",
                 f"{'op':<20}{'count':>6}  " + "  ".join(f"{v:>5}" for v in VERSIONS)]
        for op, count in sorted(self.op_counts.items()):
            row = self.support[op]
            lines.append(f"{op:<20}{count:>6}  " + "  ".join(f"{mark[row.get(v)]:>5}" for v in VERSIONS))
        for version in VERSIONS:
            blockers = self.blockers(version)
            lines.append(f"TensorRT {version}: " + ("parses" if not blockers else "BLOCKED: " + "; ".join(blockers)))
        lines.append(f"INT64 tensors: {len(self.int64_tensors)} (TensorRT casts to INT32; shape arithmetic only is fine)")
        lines.append(f"Reshapes with run-time shapes: {len(self.dynamic_reshapes)}; Resizes with run-time sizes: "
                     f"{len(self.dynamic_resizes)}")
        for op, why in self.fp16_risks.items():
            lines.append(f"FP16 risk: {op} ({why}); pinned to FP32 by the engine builder")
        return "\n".join(lines)


def _constant_names(model: onnx.ModelProto) -> set[str]:
    names = {init.name for init in model.graph.initializer}
    names |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return names


def compatibility_report(model: onnx.ModelProto) -> CompatReport:
    """Inspect ``model`` (shape inference is run on a copy for tensor types)."""
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    counts = Counter(node.op_type for node in model.graph.node)
    support: dict[str, dict[str, bool | None]] = {
        op: dict(SUPPORT[op]) if op in SUPPORT else dict.fromkeys(VERSIONS) for op in counts}
    inferred = onnx.shape_inference.infer_shapes(model)
    value_infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    int64 = sorted(v.name for v in value_infos if v.type.tensor_type.elem_type == TensorProto.INT64)
    constants = _constant_names(model)
    reshapes = [n.name for n in model.graph.node if n.op_type == "Reshape" and n.input[1] not in constants]
    resizes = [n.name for n in model.graph.node if n.op_type == "Resize"
               and not any(i in constants for i in list(n.input)[2:] if i)]
    risks = {op: why for op, why in FP16_RISK_OPS.items() if op in counts}
    return CompatReport(opset, dict(counts), support, int64, reshapes, resizes, risks)
