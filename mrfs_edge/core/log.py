"""What the toolkit says to the user: stdlib ``logging``, one prefixed line on stderr per message.

Every module logs through ``logging.getLogger(__name__)``, i.e. below the ``mrfs_edge`` logger;
a command calls :func:`configure_logging` once (the CLI base does it from ``-q``/``-v``), a
library user configures logging as they like. Results a command exists to produce (tables,
the path it wrote) stay on stdout; this channel is for what the user should know meanwhile.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
ROOT_LOGGER = "mrfs_edge"
PREFIX = "[mrfs-edge]"
QUIET, NORMAL, VERBOSE = -1, 0, 1
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


class ConsoleFormatter(logging.Formatter):
    """``[mrfs-edge] message`` for INFO/DEBUG, ``warning: message`` / ``error: message`` above.

    The level words match the commands' ``error: <one line>``; a traceback (``exc_info``) follows
    the line, which only ``-v`` shows because the CLI base logs it at DEBUG.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {record.message}"
        return f"{PREFIX} {record.message}"


class ConsoleHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at each message, through ``tqdm.write``.

    Looking ``sys.stderr`` up per message (not once at configuration) keeps redirections and
    pytest's capture working; ``tqdm.write`` clears a running progress bar, prints the line
    and redraws the bar below it, so messages never tear a bar apart.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's contract: a failed emit is reported, never raised
            self.handleError(record)


def configure_logging(verbosity: int = NORMAL) -> logging.Logger:
    """One stderr handler on the ``mrfs_edge`` logger, at WARNING (``-q``), INFO or DEBUG (``-v``).

    Calling it again replaces the handler instead of adding a second one (no doubled lines).
    Records still propagate, so pytest's ``caplog`` and an application's root handlers see them.
    """
    logger = logging.getLogger(ROOT_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    handler = ConsoleHandler()
    handler.setFormatter(ConsoleFormatter())
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[max(QUIET, min(VERBOSE, verbosity))])
    return logger


def is_verbose() -> bool:
    """Whether ``-v`` (DEBUG) is in effect for the toolkit's messages."""
    return logging.getLogger(ROOT_LOGGER).isEnabledFor(logging.DEBUG)



def progress(iterable: Iterable[T] | None = None, disable: bool = False, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar on stderr, drawn only when stderr is a terminal (and ``disable`` is not set).

    Redirected to a file or a pipe (a log, CI, a supervisor), a bar is nothing but carriage
    returns and escape codes; the log lines around it say the same in words.
    """
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, file=sys.stderr, disable=disable or not _is_terminal(sys.stderr), **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def plural(count: int, noun: str) -> str:
    """``1 group`` / ``3 groups``: the count and its noun agreeing."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
