"""What the toolkit says to the user: one prefixed line on stderr per event."""
from __future__ import annotations

import sys


def announce(message: str) -> None:
    print(f"[mrfs-edge] {message}", file=sys.stderr)
