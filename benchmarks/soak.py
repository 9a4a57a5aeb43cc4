#!/usr/bin/env python3
"""The runtime pipeline for a long time on a replayed source: memory, descriptors and threads sampled (see --help)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mrfs_edge.tools.run import soak_main  # (needs the repository root on sys.path)

if __name__ == "__main__":
    sys.exit(soak_main())
