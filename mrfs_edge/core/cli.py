"""What every command-line script shares: one-line errors and a non-zero exit for bad input."""
from __future__ import annotations

import sys
from collections.abc import Callable

from mrfs_edge.core.errors import MrfsEdgeError


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main``; a user error prints ``error: <one line>`` on stderr and returns 2."""
    try:
        return main(argv)
    except (MrfsEdgeError, ValueError, FileNotFoundError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
