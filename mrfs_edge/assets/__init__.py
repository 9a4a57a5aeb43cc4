"""Where the bundled demo checkpoint and sample pairs live (paths only, importable from any layer).

The commands' fall-back to them, and what they say when they do, is :mod:`mrfs_edge.tools.defaults`.
"""
from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent
DEMO_CHECKPOINT = ASSETS / "mrfs_b0_mfnet_demo.pth"
DEMO_MODEL_CARD = ASSETS / "MODEL_CARD.md"
SAMPLES = ASSETS / "samples"
EVAL_SPLIT = SAMPLES / "eval.txt"
CALIB_SPLIT = SAMPLES / "calib.txt"
DEMO_INPUT_SIZE = (480, 640)


def cache_dir() -> Path:
    """Where derived artefacts of the defaults (e.g. the demo ONNX) are cached."""
    root = os.environ.get("MRFS_EDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mrfs_edge")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
