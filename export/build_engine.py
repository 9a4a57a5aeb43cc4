#!/usr/bin/env python3
"""Build a TensorRT engine (FP32/FP16/INT8) from an MRFS checkpoint or ONNX (see mrfs_edge.tools.build_engine)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mrfs_edge.tools.build_engine import entry

sys.exit(entry())
