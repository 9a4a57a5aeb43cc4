"""What an engine really is: per-layer precision and device from TensorRT's engine inspector.

A build request (flags, FP32 pins, DLA) is only a request: TensorRT may fuse a pinned LayerNorm
into an FP16 block (TensorRT issues 3889, 4505, 4540) or fall layers back from DLA to the GPU.
The builder therefore builds with ``ProfilingVerbosity.DETAILED`` and reads
``get_engine_information(LayerInformationFormat.JSON)``: ``{"Layers": [...], "Bindings": [...]}``,
each layer an object with "Name", "LayerType", "Inputs"/"Outputs" (whose "Format/Datatype"
names the type, e.g. "Row major linear FP32", "Two wide channel vectorized row major FP16
format", "Channel major INT8 ...") and "TacticName"; from 10.x also "Metadata" holding
"[ONNX Layer: <node>]" for each ONNX node the engine layer covers. A DLA subgraph shows as a
layer whose type or name mentions DLA ("{ForeignNode[...]}" on DLA).

The report is stored in the sidecar (``layers``) and as ``<engine>.layers.json``:
``{"counts": {"INT8": n, "FP16": n, "FP32": n, "other": n, "DLA": n, "GPU": n}, "layers": [{"name",
"type", "precision", "device", "onnx_nodes", "tactic"}]}``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence

from mrfs_edge.core.files import write_json_atomic

PRECISIONS = (("INT8", ("int8",)), ("FP16", ("fp16", "half")), ("FP32", ("fp32", "float")))
ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


def _precision(layer: Dict[str, Any]) -> str:
    """The layer's compute type, read from its outputs' format (the type TensorRT chose)."""
    text = " ".join(str(t.get("Format/Datatype", "")) for t in layer.get("Outputs", [])).lower()
    for name, words in PRECISIONS:
        if any(word in text for word in words):
            return name
    return "other"


def _device(layer: Dict[str, Any]) -> str:
    text = f"{layer.get('LayerType', '')} {layer.get('TacticName', '')}".lower()
    return "DLA" if "dla" in text else "GPU"


def parse_engine_information(text: str) -> Dict[str, Any]:
    """The inspector's JSON as our report; layers given by name only mean no DETAILED verbosity."""
    data = json.loads(text)
    layers: List[Dict[str, Any]] = []
    for entry in data.get("Layers", []):
        if not isinstance(entry, dict):
            layers.append({"name": str(entry), "type": "", "precision": "unknown", "device": "unknown",
                           "onnx_nodes": [], "tactic": ""})
            continue
        name = str(entry.get("Name", ""))
        nodes = ONNX_LAYER.findall(str(entry.get("Metadata", ""))) or [n.strip() for n in name.split(" + ")]
        layers.append({"name": name, "type": str(entry.get("LayerType", "")), "precision": _precision(entry),
                       "device": _device(entry), "onnx_nodes": nodes, "tactic": str(entry.get("TacticName", ""))})
    counts = {key: 0 for key in ("INT8", "FP16", "FP32", "other", "GPU", "DLA")}
    for layer in layers:
        counts[layer["precision"] if layer["precision"] in counts else "other"] += 1
        if layer["device"] in counts:
            counts[layer["device"]] += 1
    return {"counts": counts, "layers": layers}


def summary_line(report: Dict[str, Any]) -> str:
    """``12 layers: 8 INT8, 2 FP16, 2 FP32; 0 on DLA`` (what the build, runtime and bench print)."""
    c = report.get("counts", {})
    total = len(report.get("layers", []))
    other = f", {c.get('other', 0)} other" if c.get("other") else ""
    return (f"{total} layers: {c.get('INT8', 0)} INT8, {c.get('FP16', 0)} FP16, {c.get('FP32', 0)} FP32{other}; "
            f"{c.get('DLA', 0)} on DLA")


def pins_not_held(report: Dict[str, Any], pinned: Sequence[str]) -> List[str]:
    """Pinned ONNX node names whose engine layer does not run FP32 (fused into a lower precision)."""
    by_node: Dict[str, str] = {}
    for layer in report.get("layers", []):
        for node in layer["onnx_nodes"]:
            by_node.setdefault(node, layer["precision"])
    return [name for name in pinned if by_node.get(name, "FP32") not in ("FP32", "unknown", "other")]


def layers_path(engine_path: str | os.PathLike[str]) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".layers.json")


def write_layer_report(engine_path: str | os.PathLike[str], report: Dict[str, Any]) -> Path:
    return write_json_atomic(layers_path(engine_path), report)
