#!/usr/bin/env python3
"""GMACs of every MRFS variant per input size (see mrfs_edge.tools.gmacs, or --help)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mrfs_edge.tools.gmacs import entry  # (needs the repository root on sys.path)

if __name__ == "__main__":
    sys.exit(entry())
