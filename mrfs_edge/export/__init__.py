"""Checkpoint → ONNX export with parity checks and TensorRT compatibility reports (needs torch)."""
from .onnx_export import ExportResult, build_contract, export_onnx
from .options import ExportOptions, parse_shape

__all__ = ["ExportOptions", "ExportResult", "export_onnx", "build_contract", "parse_shape"]
