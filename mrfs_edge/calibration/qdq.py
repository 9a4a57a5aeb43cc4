"""Explicit INT8 quantisation: Q/DQ ONNX models that TensorRT accepts, and their surgery.

Q/DQ pairs go on the inputs of weighted layers only (Conv, MatMul and Gemm with a weight
initializer): symmetric INT8, zero points 0, weights per channel on the output axis, float
weights kept behind a Q/DQ pair (what TensorRT 8.5 to 10 parse). LayerNorm, Softmax, the
attention MatMuls between two activations and the final Sigmoid stay in higher precision.

ONNX Runtime's ``quantize_static`` calibrates once into a JSON range table; mixed-precision
variants are then made by removing Q/DQ pairs from the fully quantised graph
(:func:`strip_qdq`), which takes milliseconds instead of a re-quantisation. NVIDIA ModelOpt's
ONNX PTQ produces the final model instead when it is installed (:func:`quantize_modelopt`).
"""
from __future__ import annotations

import inspect
import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from mrfs_edge.calibration.dataset import CalibrationSet
from mrfs_edge.calibration.options import CALIBRATION_METHODS
from mrfs_edge.core.log import ConsoleFormatter, ConsoleHandler

LOG = logging.getLogger(__name__)

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
# ONNX Runtime's quantize_static logs two such hints on the root logger ("Please consider to run
# pre-processing ...", then "Please consider pre-processing ...") for every model without its
# pre-processing metadata. The pre-processing (symbolic shape inference, ORT graph optimisation)
# is meant for ORT's CPU kernels and would fold the graph TensorRT is to build, so the advice does
# not apply here: both are dropped instead of printed on every calibration.
PREPROCESSING_HINT = ("Please consider", "pre-processing")


@contextmanager
def ort_quantizer_logging() -> Iterator[None]:
    """Around a ``quantize_static`` call: its pre-processing hints dropped, its other warnings kept.

    Its calibrators also print their progress ("Collecting tensor data ...") on stdout, which is
    a command's result channel: that text goes to the debug log (``-v``) instead.

    It logs through the ``logging`` module's functions, which install a ``basicConfig`` handler
    on the root logger when it has none; that handler would stay and print every later toolkit
    warning a second time (toolkit records propagate to the root). So when the root logger has
    no handler, one of the toolkit's console handlers stands in for the call, for the root
    logger's own records only.
    """
    root = logging.getLogger()

    def not_the_hint(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(PREPROCESSING_HINT[0]) and PREPROCESSING_HINT[1] in message)

    root.addFilter(not_the_hint)
    stand_in = None
    if not root.handlers:
        stand_in = ConsoleHandler(logging.WARNING)
        stand_in.setFormatter(ConsoleFormatter())
        stand_in.addFilter(lambda record: record.name == root.name)
        root.addHandler(stand_in)
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            yield
    finally:
        root.removeFilter(not_the_hint)
        if stand_in is not None:
            root.removeHandler(stand_in)
        for line in printed.getvalue().splitlines():
            LOG.debug(f"onnxruntime.quantization: {line}")


def weighted_nodes(model: onnx.ModelProto) -> list[str]:
    """Conv/MatMul/Gemm nodes whose second input is a weight initializer (the INT8 candidates).

    Attention MatMuls multiply two activations and are left out by construction.
    """
    initializers = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type in QUANTIZED_OP_TYPES and len(n.input) > 1 and n.input[1] in initializers]


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"entropy": CalibrationMethod.Entropy, "max": CalibrationMethod.MinMax,
             "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise ValueError(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}")
    return table[method]


def ort_extra_options(method: str = "percentile") -> dict[str, object]:
    """quantize_static options that make ONNX Runtime emit TensorRT-conformant Q/DQ.

    ONNX Runtime's entropy calibrator defaults to as many histogram bins as quantised bins
    (128), which leaves it no threshold to choose: it silently returns the min-max range. 512
    bins give the KL search room to clip (TensorRT's own entropy calibrator uses 2048, which is
    minutes slower in ONNX Runtime's Python search for a small gain).
    """
    bins: dict[str, object] = {"CalibNumBins": 512, "CalibNumQuantizedBins": 128} if method == "entropy" else {}
    return {**bins, "ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
            "QuantizeBias": False, "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES),
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}


def quantize_ort(fp32_path: Path, output: Path, calibration: CalibrationSet, method: str,
                 table_path: Path, nodes: list[str] | None = None) -> Path:
    """Quantise ``nodes`` (default: every weighted node) with ranges from ``table_path``.

    The range table (ONNX Runtime's JSON calibration cache) is computed from ``calibration``
    when ``table_path`` does not exist and read from it when it does: a caller that may hold a
    table of other data must remove it first.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    kwargs: dict[str, object] = {}
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(table_path)
    nodes = nodes or weighted_nodes(onnx.load(str(fp32_path)))
    with ort_quantizer_logging():
        quantize_static(str(fp32_path), str(output), calibration.ort_reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_quantize=nodes,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=_ort_method(method), extra_options=ort_extra_options(method), **kwargs)
    return output


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
    except Exception:  # ModelOpt may fail on import for CUDA/cupy reasons too: treat as absent
        return False
    return True


def strip_qdq(model: onnx.ModelProto, keep: set[str]) -> onnx.ModelProto:
    """A copy of ``model`` where only nodes in ``keep`` read through Q/DQ pairs.

    Every other consumer of a DequantizeLinear is rewired to the tensor before the matching
    QuantizeLinear; Q/DQ nodes left without consumers are removed.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name in keep or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
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
    channel along the layer's output axis (Conv 0, MatMul 1, Gemm 0 with transB else 1).
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
    return problems


def save_with_metadata(model: onnx.ModelProto, metadata: dict[str, str], path: str | os.PathLike[str]) -> None:
    """Quantisers drop ``metadata_props``: put the contract back before saving."""
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
