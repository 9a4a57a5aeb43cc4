"""FP16 ONNX graphs with FP32 pins: what a TensorRT FP16 engine computes, runnable anywhere.

ONNX Runtime runs this graph on the CPU to emulate the numerics of an FP16 engine whose
overflow-prone ops (the contract's ``fp32_nodes``) are pinned to FP32, so the accuracy cost
of FP16 is known before a Jetson is involved. Emulation, not a measurement of TensorRT:
TensorRT may fuse and choose kernels differently.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import onnx

from mrfs_edge.backends.onnxruntime_runner import read_onnx_contract
from mrfs_edge.core.files import atomic_path


def convert_to_fp16(fp32_path: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Write ``output``: float16 weights and activations, FP32 I/O, pinned nodes in FP32."""
    from onnxconverter_common import float16

    contract = read_onnx_contract(fp32_path)
    model = onnx.load(str(fp32_path))
    metadata = {p.key: p.value for p in model.metadata_props}
    with warnings.catch_warnings():  # one warning per sub-1e-7 weight clamped to FP16's range: noise here
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=list(contract.fp32_nodes),
                                                disable_shape_infer=False)
    del half.metadata_props[:]
    metadata["mrfs_edge.precision"] = json.dumps({"precision": "fp16-emulated", "fp32_pins": len(contract.fp32_nodes)})
    onnx.helper.set_model_props(half, metadata)
    output = Path(output)
    with atomic_path(output) as tmp:
        onnx.save(half, str(tmp))
    return output
