"""Checkpoint → ONNX export with parity checks and TensorRT compatibility reports (needs torch).

The torch-bound names load on first use (PEP 562), so ``mrfs_edge.tools.export_onnx`` and
``.options`` import on a core install: the target CLI shares their argument definitions.
"""
from __future__ import annotations

from typing import Any

from mrfs_edge.core.export_options import ExportOptions, parse_shape

_LAZY = ("ExportResult", "build_contract", "export_onnx")

__all__ = ["ExportOptions", "ExportResult", "build_contract", "export_onnx", "parse_shape"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from mrfs_edge.core.errors import needs_extra

        with needs_extra("ONNX export"):
            from mrfs_edge.export import onnx_export
        return getattr(onnx_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
