#!/usr/bin/env python3
"""Export a trained MRFS checkpoint to ONNX (see mrfs_edge.tools.export_onnx)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mrfs_edge.tools.export_onnx import entry

sys.exit(entry())
