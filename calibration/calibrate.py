#!/usr/bin/env python3
"""Calibrate an exported MRFS ONNX model to INT8 Q/DQ (see mrfs_edge.tools.calibrate)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mrfs_edge.tools.calibrate import entry

sys.exit(entry())
