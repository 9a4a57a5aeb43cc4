"""Find the ops that overflow or lose accuracy in FP16, to pin them to FP32 (onnx only).

Matches by op type and by the decomposed-LayerNorm pattern, so it works on opset-17 graphs
(``LayerNormalization``) and on TensorRT-8.5 graphs (ReduceMean → Sub → Mul → ReduceMean →
Add → Sqrt → Div) alike, after simplification renamed nodes.
"""
from __future__ import annotations

import onnx

ALWAYS_FP32 = {"LayerNormalization", "ReduceMean", "ReduceMax", "ReduceSum", "Softmax", "Sqrt", "Pow"}


def fp16_sensitive_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of nodes to keep in FP32 when the rest of the graph runs in FP16."""
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    pinned: list[str] = []
    for node in nodes:
        op = node.op_type
        sources = [producer.get(i) for i in node.input]
        source_ops = {s.op_type for s in sources if s is not None}
        if (op in ALWAYS_FP32
                or (op == "Sub" and "ReduceMean" in source_ops)                      # x − μ
                or (op == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1])  # (x − μ)²
                or (op == "Add" and "ReduceMean" in source_ops)                      # var + eps
                or (op == "Div" and "Sqrt" in source_ops)):                          # / σ
            pinned.append(node.name)
    return pinned
