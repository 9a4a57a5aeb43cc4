#!/usr/bin/env python3
"""Time and peak memory of each INT8 calibration phase (see mrfs_edge.tools.calibration_memory, or --help)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mrfs_edge.tools.calibration_memory import entry  # (needs the repository root on sys.path)

if __name__ == "__main__":
    sys.exit(entry())
