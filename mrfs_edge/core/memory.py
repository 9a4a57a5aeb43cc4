"""This process's resident memory, now and at its peak: one reader for calibration phases, soaks and benchmarks.

Torch-free and stdlib-only, so the target's soak and the workstation's calibration read memory
the same way.
"""
from __future__ import annotations

import os
import resource
import sys
from pathlib import Path
from typing import Optional

_STATM = Path("/proc/self/statm")


def resident_bytes() -> Optional[int]:
    """Resident memory now: ``/proc/self/statm``, psutil where there is no ``/proc``, ``None`` without either."""
    try:
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident memory so far of this process (or ``RUSAGE_CHILDREN``: its largest waited-for child).

    ``ru_maxrss`` is in kilobytes on Linux and in bytes on macOS.
    """
    peak = resource.getrusage(who).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
