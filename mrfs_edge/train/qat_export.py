"""A fake-quantised network → the Q/DQ ONNX TensorRT builds as it is, checked before it is kept."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from mrfs_edge import __version__
from mrfs_edge.calibration.qdq import quantized_nodes, trt_rule_violations
from mrfs_edge.core.errors import ExportError
from mrfs_edge.core.export_options import ExportOptions
from mrfs_edge.core.files import atomic_path
from mrfs_edge.export.onnx_export import declare_output_shapes, simplify, trace_to_onnx
from mrfs_edge.metrics.cost import set_cost_metadata
from mrfs_edge.model.contract import build_contract
from mrfs_edge.train.fake_quant import frozen_weight_ranges, quantized_layers

LOG = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def qdq_parameters_as_initializers(model: onnx.ModelProto) -> int:
    """Make every Q/DQ scale and zero point a plain initializer; returns how many inputs were rewired.

    The exporter gives a deduplicated scale (one value feeding several quantizers, as where two
    layers read the same tensor) through an Identity of the initializer, and zero points as
    Constant nodes; TensorRT's rule, and the rule check, ask for an initializer.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {i.name for i in graph.initializer}
    rewired = 0
    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        for index in range(1, len(node.input)):
            source = producer.get(node.input[index])
            if source is None:
                continue
            if source.op_type == "Identity" and source.input[0] in initializers:
                node.input[index] = source.input[0]
                rewired += 1
            elif source.op_type == "Constant" and source.output[0] not in initializers:
                value = next(a for a in source.attribute if a.name == "value")
                graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value.t), source.output[0]))
                initializers.add(source.output[0])
                rewired += 1
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type in ("Identity", "Constant") and n.output[0] not in used
                 or n.op_type == "Constant" and n.output[0] in initializers]:
        graph.node.remove(node)
    return rewired


def export_qat_onnx(model: torch.nn.Module, output: str | os.PathLike[str], options: ExportOptions,
                    checkpoint_sha256: str, extra_metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Export ``model`` (fake-quantised, calibrated) to ``output`` as a Q/DQ graph; ExportError if not conformant.

    ``model`` must be the MRFS interface (``config``, ``forward(rgb, modal_x)``); the contract in
    the metadata is the FP32 export's, so every command downstream reads the file like any other.
    """
    output = Path(output)
    contract = build_contract(model, options, checkpoint_sha256)
    was_training = model.training
    model.eval()
    try:
        with atomic_path(output) as tmp, frozen_weight_ranges(model):
            graph = trace_to_onnx(model, contract, options, tmp)
            qdq_parameters_as_initializers(graph)
            if options.simplify:
                graph = simplify(graph)
            declare_output_shapes(graph, contract)
            graph.producer_name, graph.producer_version = "mrfs-edge", __version__
            onnx.helper.set_model_props(graph, {**contract.metadata(), **(extra_metadata or {})})
            set_cost_metadata(graph)   # the INT8/FP16/FP32 split, read on a Jetson without onnx
            problems = trt_rule_violations(graph)
            if problems:
                raise ExportError(f"{output}: the Q/DQ graph breaks TensorRT's rules ({len(problems)}: {problems[0]})")
            layers = sum(1 for _ in quantized_layers(model))
            quantized = len(quantized_nodes(graph))
            if quantized < layers:
                raise ExportError(f"{output}: {quantized} weighted nodes read INT8 inputs, {layers} layers were quantised")
            onnx.save(graph, str(tmp))
            try:
                onnx.checker.check_model(str(tmp), full_check=True)
            except onnx.checker.ValidationError as exc:
                raise ExportError(f"{output}: onnx.checker rejected the graph: {str(exc).splitlines()[0]}") from exc
    finally:
        model.train(was_training)
    LOG.info(f"wrote {output}: {quantized} weighted nodes in INT8 (Q/DQ), TensorRT rule check passed")
    return graph
