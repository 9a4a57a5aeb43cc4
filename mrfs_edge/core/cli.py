"""What every command shares: ``-q``/``-v``, one-line errors, and exit statuses a supervisor can read.

Exit statuses of every command run through :func:`run_cli` (or wrapped by :func:`command`):

* 0 done (or the command's own non-zero status, e.g. a missed accuracy budget);
* 2 a user error: :class:`~mrfs_edge.core.errors.MrfsEdgeError`, ``ValueError``,
  ``FileNotFoundError`` or an argument mistake, reported as ``error: <one line>``;
* 1 anything else, as one line naming the exception (``-v`` adds the traceback);
* 130 SIGINT (Ctrl-C), 143 SIGTERM, also when the command stopped gracefully on the signal
  (the runtime pipeline finishes its queued frames first), so systemd or a shell sees why it ended.

SIGTERM is turned into an exception (:class:`Terminated`) instead of killing the process, so
``finally`` blocks run and an atomic write leaves no temporary file behind.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol

from mrfs_edge.core.errors import MrfsEdgeError
from mrfs_edge.core.log import NORMAL, QUIET, VERBOSE, configure_logging, is_verbose

LOG = logging.getLogger(__name__)

EXIT_OK, EXIT_UNEXPECTED, EXIT_USER_ERROR = 0, 1, 2
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM
USER_ERRORS = (MrfsEdgeError, ValueError, FileNotFoundError)


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM; a ``SystemExit`` so ``except Exception`` cannot swallow it."""

    def __init__(self) -> None:
        super().__init__(EXIT_SIGTERM)


class Main(Protocol):
    """A command's entry point: ``argv`` defaults to the command line; returns the exit status."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


class CliParser(argparse.ArgumentParser):
    """``argparse`` with the toolkit's ``-q``/``-v`` and a one-line usage error.

    Parsing configures logging from the flags, so a ``main(argv)`` called directly (tests, a
    notebook) logs exactly like the installed command.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        talk = self.add_argument_group("messages").add_mutually_exclusive_group()
        talk.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET, default=NORMAL,
                          help="only warnings and errors on stderr")
        talk.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE,
                          help="debug messages, and the traceback of an error")

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        configure_logging(parsed.verbosity)
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        """``error: <message> (see --help)`` and exit 2, instead of argparse's usage dump."""
        self.exit(EXIT_USER_ERROR, f"error: {message} (see --help)\n")


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated


@contextmanager
def _signals() -> Iterator[list[int]]:
    """SIGINT raises ``KeyboardInterrupt``, SIGTERM :class:`Terminated`, for the block; yields the
    signals that arrived, including those an inner handler took for a graceful stop.

    The arrivals are read from the interpreter's wakeup fd, which records every handled signal
    whoever's Python handler runs. Off the main thread (no signals there) it changes nothing.
    """
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated)}
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    try:
        yield arrived
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            arrived.extend(os.read(read_end, 1024))
        except BlockingIOError:   # nothing arrived
            pass
        os.close(read_end)
        os.close(write_end)


def run_cli(main: Callable[[Any], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and turn whatever ends it into the exit status described above.

    Argument errors and ``--help`` leave as argparse's ``SystemExit`` (status 2 and 0).
    """
    configure_logging(NORMAL)   # until main's parser applies -q/-v
    with _signals() as arrived:
        try:
            status = main(None if argv is None else list(argv))
        except Terminated:
            LOG.warning("terminated (SIGTERM)")
            return EXIT_SIGTERM
        except KeyboardInterrupt:
            LOG.warning("interrupted (SIGINT)")
            return EXIT_SIGINT
        except USER_ERRORS as exc:
            LOG.debug("traceback of the error below:", exc_info=True)
            LOG.error(one_line(exc))
            return EXIT_USER_ERROR
        except Exception as exc:
            LOG.debug("traceback of the error below:", exc_info=True)
            hint = "" if is_verbose() else " (run with -v for the traceback)"
            LOG.error(f"{type(exc).__name__}: {one_line(exc)}{hint}")
            return EXIT_UNEXPECTED
    # A command that stopped gracefully on a signal still says which one ended it.
    for sig, code in ((signal.SIGTERM, EXIT_SIGTERM), (signal.SIGINT, EXIT_SIGINT)):
        if sig in arrived:
            return code
    return status


def command(main: Callable[[Any], int]) -> Main:
    """``main`` wrapped in :func:`run_cli`: calling it (console script, test) never raises for a user error."""
    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        return run_cli(main, argv)
    return wrapper
