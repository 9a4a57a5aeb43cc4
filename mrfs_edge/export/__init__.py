"""Checkpoint → ONNX export with parity checks and TensorRT compatibility reports (needs torch)."""
from .onnx_export import ExportResult, build_contract, export_onnx, export_or_reuse
from .options import ExportOptions, parse_shape

__all__ = ["ExportOptions", "ExportResult", "export_onnx", "export_or_reuse", "build_contract", "parse_shape"]
