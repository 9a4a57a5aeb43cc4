#!/usr/bin/env python3
"""End-to-end FPS of the runtime pipeline against model-only FPS (see --help)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mrfs_edge.tools.run import fps_main  # (needs the repository root on sys.path)

if __name__ == "__main__":
    sys.exit(fps_main())
