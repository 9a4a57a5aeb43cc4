"""Checkpoint → ONNX under the deployment contract, simplified, checked and self-describing.

By default the graph is the network's exact deploy form (:mod:`mrfs_edge.model.deploy_form`:
the segmentation head folded per branch, one infrared channel), about a fifth fewer
multiply-adds for B0; ``ExportOptions.rewrite=False`` traces the authors' modules as they are.
Every export is proven before it is kept: ``onnx.checker`` (full check), an ONNX Runtime vs
PyTorch parity check on real pairs against the *literal* network (so every export also proves
the rewrite), and a TensorRT-parser compatibility report stored beside the file. The metadata
records whether the rewrite was applied and the GMACs before and after it. A failing export
leaves nothing at the output path.
"""
from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from mrfs_edge import __version__
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import ExportError
from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.core.files import atomic_path, sha256_file, write_bytes_atomic, write_json_atomic
from mrfs_edge.export.cost_report import ExportCost, countable, export_cost
from mrfs_edge.export.parity import ParityResult, check_parity
from mrfs_edge.export.precision import fp16_sensitive_nodes
from mrfs_edge.export.trt_support import CompatReport, compatibility_report
from mrfs_edge.export.wrapper import DeployWrapper, decompose_layernorm
from mrfs_edge.metrics.cost import COST_KEY, cost_metadata
from mrfs_edge.model.checkpoint import load_checkpoint
from mrfs_edge.model.contract import build_contract
from mrfs_edge.model.deploy_form import DeployMRFS, to_deploy_form
from mrfs_edge.model.network import MRFS

LOG = logging.getLogger(__name__)


@dataclass
class ExportResult:
    path: Path
    contract: ModelContract
    parity: list[ParityResult]
    report: CompatReport
    export_seconds: float
    size_bytes: int
    cost: ExportCost


def _dummy_inputs(contract: ModelContract) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = contract.input_shapes()
    if contract.uint8_io:
        return (torch.randint(0, 256, shapes["visible"], dtype=torch.uint8),
                torch.randint(0, 256, shapes["infrared"], dtype=torch.uint8))
    return torch.rand(shapes["visible"]), torch.rand(shapes["infrared"])


def _dynamic_axes(contract: ModelContract) -> dict[str, dict[int, str]] | None:
    if not contract.dynamic:
        return None
    h_axis, w_axis = (1, 2) if contract.uint8_io else (2, 3)
    in_axes: dict[int, str] = {}
    if "batch" in contract.dynamic:
        in_axes[0] = "batch"
    if "height" in contract.dynamic:
        in_axes.update({h_axis: "height", w_axis: "width"})
    seg_axes = {0: "batch"} if "batch" in contract.dynamic else {}
    if "height" in contract.dynamic:
        seg_axes.update({1: "height", 2: "width"} if contract.seg_output == "labels" else {2: "height", 3: "width"})
    fused_axes = {k: v for k, v in in_axes.items()}
    return {"visible": in_axes, "infrared": in_axes, contract.seg_name: seg_axes, "fused": fused_axes}


def trace_to_onnx(model: MRFS, contract: ModelContract, options: ExportOptions, path: Path) -> onnx.ModelProto:
    """Trace the wrapped network, its deploy form unless ``options.rewrite`` is off (TorchScript
    exporter: stable op set across torch releases); ``model`` itself is left as it is."""
    network: MRFS | DeployMRFS = (to_deploy_form(model, 1 if contract.ir_channels == 1 else 3)
                                  if options.rewrite else model)
    if options.decompose_layernorm:
        network = network if options.rewrite else copy.deepcopy(model)   # the deploy form is a copy already
        decompose_layernorm(network)
    wrapper = DeployWrapper(network, contract.seg_output, contract.uint8_io, contract.ir_channels).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on static shape arithmetic are expected
        torch.onnx.export(wrapper, _dummy_inputs(contract), str(path), input_names=list(contract.input_names),
                          output_names=list(contract.output_names), opset_version=options.opset,
                          dynamic_axes=_dynamic_axes(contract), do_constant_folding=True, dynamo=False)
    return onnx.load(str(path))


def declare_output_shapes(model: onnx.ModelProto, contract: ModelContract) -> None:
    """Declare every output dim (static ones as numbers, dynamic ones by axis name).

    The tracer leaves the segmentation output of dynamic graphs with anonymous dims
    (``Resizeseg_logits_dim_1``), hiding even the class count from ONNX consumers.
    """
    n, h, w = contract.batch, contract.height, contract.width
    shapes = {contract.seg_name: [n, h, w] if contract.seg_output == "labels" else [n, contract.num_classes, h, w],
              "fused": [n, h, w, 3] if contract.uint8_io else [n, 3, h, w]}
    axes = _dynamic_axes(contract) or {}
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for i, value in enumerate(shapes.get(output.name, [])[: len(dims)]):
            name = axes.get(output.name, {}).get(i)
            if name:
                dims[i].dim_param = name
            else:
                dims[i].dim_value = value


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and shape simplification with onnxslim (a maintained simplifier)."""
    import onnxslim

    return onnxslim.slim(model)


def export_onnx(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str],
                options: ExportOptions | None = None, parity_data: str | os.PathLike[str] | None = None,
                parity_split: str | os.PathLike[str] | None = None) -> ExportResult:
    """Export ``checkpoint`` to ``output`` and prove it; raises :class:`ExportError` on failure."""
    options = options or ExportOptions()
    output = Path(output)
    started = time.perf_counter()
    model = load_checkpoint(checkpoint)
    contract = build_contract(model, options, sha256_file(checkpoint))
    with atomic_path(output) as tmp:
        LOG.info(f"tracing {contract.backbone} ({contract.num_classes} classes) at "
                 f"{options.batch}x{options.height}x{options.width}, opset {options.opset}")
        graph = trace_to_onnx(model, contract, options, tmp)  # an onnx.ModelProto
        if options.simplify:
            graph = simplify(graph)
        declare_output_shapes(graph, contract)
        if options.decompose_layernorm and any(n.op_type == "LayerNormalization" for n in graph.graph.node):
            raise ExportError(f"{output}: LayerNormalization left in a --trt-compat 8.5 graph")
        contract.fp32_nodes = fp16_sensitive_nodes(graph)
        counted = countable(graph, contract)        # a dynamic graph is counted at its optimum shape
        cost = export_cost(counted, contract, options.rewrite)
        LOG.info(cost.summary())
        graph.producer_name, graph.producer_version = "mrfs-edge", __version__
        onnx.helper.set_model_props(graph, {**contract.metadata(), **cost.metadata(), COST_KEY: cost_metadata(counted)})
        onnx.save(graph, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{output}: onnx.checker rejected the graph: {str(exc).splitlines()[0]}") from exc
        export_seconds = time.perf_counter() - started
        parity = check_parity(model, tmp, contract, options, parity_data, parity_split)  # the literal network
        for result in parity:
            LOG.info(result.summary())
        failed = [r for r in parity if not r.passed]
        if failed:
            raise ExportError(f"{output}: parity check failed ({failed[0].summary()}); file not written")
        report = compatibility_report(graph)
        size = tmp.stat().st_size
    write_bytes_atomic(output.with_suffix(".trt_compat.txt"), (report.text() + "\n").encode())
    write_json_atomic(output.with_suffix(".trt_compat.json"), report.as_dict())
    LOG.info(f"wrote {output} ({size / 1e6:.1f} MB) in {export_seconds:.1f} s; "
             f"compatibility report {output.with_suffix('.trt_compat.txt')}")
    return ExportResult(output, contract, parity, report, export_seconds, size, cost)


__all__ = [
    "ExportResult",
    "build_contract",
    "declare_output_shapes",
    "export_onnx",
    "trace_to_onnx",
]
