#!/usr/bin/env python3
"""Run an exported MRFS model on paired visible/infrared streams, torch-free (see --help)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mrfs_edge.tools.run import run_main  # (needs the repository root on sys.path)

if __name__ == "__main__":
    sys.exit(run_main())
