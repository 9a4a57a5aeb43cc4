"""What the exported graph costs, before and after the deploy-form rewrite (onnx only).

The exported graph's multiply-adds are counted on the graph itself
(:func:`mrfs_edge.metrics.cost.graph_costs`). The literal network's are that count plus what the
rewrite removed (:func:`mrfs_edge.model.deploy_form.rewrite_savings`, from layer shapes), so an
export traces once; the tests check that sum against a count on a literal export. A dynamic
graph is counted at the contract's static (optimum) shape: its inputs are fixed to it and the
shapes propagated through the run-time shape arithmetic (:func:`static_copy`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import onnx

from mrfs_edge.core.contract import ModelContract
from mrfs_edge.metrics.cost import NodeCost, graph_costs
from mrfs_edge.model.deploy_form import rewrite_savings
from mrfs_edge.model.variants import ModelConfig

# ONNX metadata key: whether the deploy-form rewrite was applied, and the GMACs before and after.
REWRITE_KEY = "mrfs_edge.export.rewrite"


@dataclass(frozen=True)
class ExportCost:
    """Multiply-adds of one inference at ``shape`` (batch, height, width): literal network and graph."""

    rewrite: bool
    shape: tuple[int, int, int]
    literal_weighted: int
    literal_attention: int
    graph_weighted: int
    graph_attention: int

    @property
    def literal_gmacs(self) -> float:
        return (self.literal_weighted + self.literal_attention) / 1e9

    @property
    def graph_gmacs(self) -> float:
        return (self.graph_weighted + self.graph_attention) / 1e9

    def summary(self) -> str:
        n, h, w = self.shape
        literal = (f"{self.literal_gmacs:.2f} GMACs ({self.literal_weighted / 1e9:.2f} weighted, "
                   f"{self.literal_attention / 1e9:.2f} attention)")
        if not self.rewrite:
            return f"cost {n}x{h}x{w}: literal graph (--no-rewrite) {literal}"
        saved = 1.0 - self.graph_gmacs / self.literal_gmacs if self.literal_gmacs else 0.0
        return (f"cost {n}x{h}x{w}: literal network {literal} -> deploy graph {self.graph_gmacs:.2f} GMACs "
                f"({self.graph_weighted / 1e9:.2f} weighted, {self.graph_attention / 1e9:.2f} attention), "
                f"{100 * saved:.1f}% fewer")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "literal_gmacs": round(self.literal_gmacs, 4), "graph_gmacs": round(self.graph_gmacs, 4)}

    def metadata(self) -> dict[str, str]:
        return {REWRITE_KEY: json.dumps(self.as_dict(), sort_keys=True)}


def static_copy(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """``model`` with its inputs fixed to ``shapes`` and every tensor shape inferred, so a dynamic
    graph can be counted at one size.

    ONNX Runtime's symbolic shape inference evaluates the run-time shape arithmetic (Shape →
    Gather → Concat → Reshape) that ``onnx.shape_inference`` leaves unknown even with data
    propagation.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                dim.Clear()
                dim.dim_value = size
    del fixed.graph.value_info[:]
    for value in fixed.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            dim.Clear()
    return SymbolicShapeInference.infer_shapes(fixed, auto_merge=True)


def split_macs(costs: list[NodeCost]) -> tuple[int, int]:
    """(weighted, attention) multiply-adds of a graph's counted nodes."""
    weighted = sum(c.macs for c in costs if c.kind == "weighted")
    return weighted, sum(c.macs for c in costs) - weighted


def countable(model: onnx.ModelProto, contract: ModelContract) -> onnx.ModelProto:
    """``model`` itself when static, else its static copy at the contract's (optimum) shape."""
    return static_copy(model, contract.input_shapes()) if contract.dynamic else model


def export_cost(model: onnx.ModelProto, contract: ModelContract, rewrite: bool) -> ExportCost:
    """The cost of ``model`` (an export under ``contract``, made static by :func:`countable`) and
    of the literal network it replaces."""
    weighted, attention = split_macs(graph_costs(model))
    n, h, w = contract.batch, contract.height, contract.width
    saved = 0
    if rewrite:
        config = ModelConfig(contract.backbone, contract.num_classes, contract.decoder_embed_dim)
        saved = rewrite_savings(config, h, w, 1 if contract.ir_channels == 1 else 3, n).total
    return ExportCost(rewrite, (n, h, w), weighted + saved, attention, weighted, attention)
