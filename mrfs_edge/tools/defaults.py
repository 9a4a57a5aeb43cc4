"""Embedded defaults: the bundled demo checkpoint and sample pairs (torch-free).

Every command falls back to these when the user gives no checkpoint or data, and says so in
one line on stderr, so a fresh clone runs end to end with no arguments.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from mrfs_edge.assets import ASSETS, DEMO_CHECKPOINT, EVAL_SPLIT, SAMPLES

LOG = logging.getLogger(__name__)


def checkpoint_or_default(path: str | os.PathLike[str] | None) -> Path:
    if path:
        return Path(path)
    LOG.info(f"no --checkpoint given: using the bundled demo model {DEMO_CHECKPOINT.name} (MRFS-B0, MFNet classes)")
    return DEMO_CHECKPOINT


def data_or_default(path: str | os.PathLike[str] | None, split: Path = EVAL_SPLIT,
                    what: str = "data") -> tuple[Path, Path | None]:
    """``(folder, split list or None)``: the user's folder, or the bundled samples and a split."""
    if path:
        return Path(path), None
    LOG.info(f"no {what} given: using the {len(split.read_text().split())} bundled sample pairs "
             f"({SAMPLES.relative_to(ASSETS.parent.parent)}/{split.name})")
    return SAMPLES, split
