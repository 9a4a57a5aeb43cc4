"""Checks every command applies to its arguments before any heavy work (torch import, tracing, measuring).

Two kinds, sharing one rule set:

* ``type=`` validators for ``argparse`` (:func:`positive_int`, :func:`image_side`, :func:`writable_dir`,
  ...): a bad value raises :class:`argparse.ArgumentTypeError`, so the parser reports
  ``error: argument --batch: ...`` and exits 2 before the command body runs;
* ``check_*`` functions for paths known only after parsing (a default derived from other flags):
  they raise :class:`ArgumentCheckError`, a one-line user error (exit 2 through ``core.cli``).

Nothing here creates a file or folder: a command that fails a check leaves no empty output folder,
and creates its outputs only when it writes them.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Callable, Optional, Union

from mrfs_edge.core.errors import MrfsEdgeError

# Input sides must be multiples of 32 because the encoder downsamples by 32 (core/export_options.py).
SIDE_MULTIPLE = 32
# The largest input side accepted. The network keeps full-resolution feature maps: at 8192x8192 one
# 64-channel float32 map is 16 GiB, already more than a Jetson Orin's whole memory, so a larger side
# can only end in an allocator error after minutes of tracing; 32768 would need 256 GiB per map.
MAX_SIDE = 8192


PathLike = Union[str, "os.PathLike[str]"]
Problem = Callable[[Path], Optional[str]]


class ArgumentCheckError(MrfsEdgeError):
    """An argument (usually a path) known only after parsing is unusable; the message names it."""


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def help_text(doc: str | None) -> str:
    """A module docstring as ``--help`` prints it: reST roles and double backticks dropped, so the
    reader sees ``calibrate.py --onnx`` as plain words, not markup."""
    return _ROLE.sub(r"\1", doc or "").replace("``", "")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """``type=`` for counts that must be at least 1 (batch, pairs, iterations)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """``type=`` for counts where 0 means none (warm-up runs, workers)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """``type=`` for a tolerance or rate that must be above 0 (and finite)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def side_problem(value: int) -> str | None:
    """Why ``value`` cannot be an input height or width (a multiple of 32 up to :data:`MAX_SIDE`), or ``None``."""
    if value > MAX_SIDE:
        return (f"{value} is larger than {MAX_SIDE}, the largest side the network's full-resolution feature "
                "maps fit in memory for; resize the frames instead")
    if value < SIDE_MULTIPLE or value % SIDE_MULTIPLE:
        padded = max(SIDE_MULTIPLE, -(-value // SIDE_MULTIPLE) * SIDE_MULTIPLE)
        return (f"{value} is not a positive multiple of {SIDE_MULTIPLE} (the encoder downsamples by 32); "
                f"use {padded}: the runtime zero-pads smaller frames to it")
    return None


def image_side(text: str) -> int:
    """``type=`` for an input height or width: a multiple of 32 from 32 to :data:`MAX_SIDE`."""
    value = _integer(text)
    problem = side_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def check_image_side(value: int, flag: str) -> int:
    """``value`` of ``flag`` (``"--height"``) as :func:`image_side` after parsing: ``--height 240 is not ...``."""
    problem = side_problem(value)
    if problem is not None:
        raise ArgumentCheckError(f"{flag} {problem}")
    return value


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``.`` for a relative path with none)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used (or created) as an output folder, or ``None`` when it can.

    A missing folder is fine when its nearest existing ancestor is a writable folder; nothing is created.
    """
    existing = _first_existing(path)
    if not existing.is_dir():
        if existing == path:
            return f"{path} is a file, not a folder"
        return f"cannot create folder {path}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == path:
            return f"folder {path} is not writable"
        return f"cannot create folder {path}: {existing} is not writable"
    return None


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file, or ``None`` when it can; nothing is created."""
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    if path.parent != path:
        parent = dir_problem(path.parent)
        if parent is not None:
            return f"cannot write {path}: {parent}"
    return None


def readable_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input file, or ``None`` when it can."""
    if not path.exists():
        return f"{path} does not exist"
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable"
    return None


def readable_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input folder, or ``None`` when it can."""
    if not path.exists():
        return f"folder {path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"folder {path} is not readable"
    return None


def _validator(problem_of: Problem, name: str) -> Callable[[str], Path]:
    def check(text: str) -> Path:
        path = Path(text).expanduser()
        problem = problem_of(path)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return path
    check.__name__ = check.__qualname__ = name
    check.__doc__ = f"``type=`` for a path: :func:`{problem_of.__name__}` as an argument error."
    return check


writable_dir = _validator(dir_problem, "writable_dir")
writable_file = _validator(file_problem, "writable_file")
readable_file = _validator(readable_file_problem, "readable_file")
readable_dir = _validator(readable_dir_problem, "readable_dir")


def _check(problem_of: Problem, path: PathLike, flag: str) -> Path:
    path = Path(path).expanduser()
    problem = problem_of(path)
    if problem is not None:
        raise ArgumentCheckError(f"{flag}: {problem}")
    return path


def check_writable_dir(path: PathLike, flag: str) -> Path:
    """``path`` as an output folder for ``flag`` (e.g. ``"--output-dir"``), or :class:`ArgumentCheckError`."""
    return _check(dir_problem, path, flag)


def check_writable_file(path: PathLike, flag: str) -> Path:
    """``path`` as an output file for ``flag``, or :class:`ArgumentCheckError`."""
    return _check(file_problem, path, flag)


def check_readable_file(path: PathLike, flag: str) -> Path:
    """``path`` as an input file for ``flag``, or :class:`ArgumentCheckError`."""
    return _check(readable_file_problem, path, flag)


def check_readable_dir(path: PathLike, flag: str) -> Path:
    """``path`` as an input folder for ``flag``, or :class:`ArgumentCheckError`."""
    return _check(readable_dir_problem, path, flag)
