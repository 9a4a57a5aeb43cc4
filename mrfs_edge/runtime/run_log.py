"""Where a run's JSON log goes: beside what the run wrote, or where the user said.

A log belongs with the outputs it describes, not in whatever folder the command was started
from: a folder output gets ``<folder>/runtime_log.json``, a video or a results MCAP
``<stem>.runtime_log.json`` beside it. A run that only shows frames (display, ``null://``) writes no log unless asked.
A log path the user gives is checked before the run starts, so a long drive is not recorded
only to fail at the end for want of a writable folder.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mrfs_edge.core.errors import SinkError
from mrfs_edge.io.bag import McapSink
from mrfs_edge.io.sinks import ImageFolderSink, SegmentedVideoSink, Sink, VideoFileSink

LOG_NAME = "runtime_log.json"


def default_log_path(sinks: Sequence[Sink]) -> Path | None:
    """The log beside the first output written to disk; ``None`` when nothing is written."""
    for sink in sinks:
        if isinstance(sink, ImageFolderSink):
            return sink.folder / LOG_NAME
        if isinstance(sink, (VideoFileSink, SegmentedVideoSink, McapSink)):
            return sink.path.with_name(f"{sink.path.stem}.{LOG_NAME}")
    return None


def check_log_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if a log can be written there, else :class:`SinkError` (one line); creates nothing.

    The nearest existing folder on the way must be writable (missing folders are made at the
    end, as :func:`~mrfs_edge.core.files.atomic_path` does), and ``path`` must not be a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise SinkError(f"--log {path}: is a folder; give a file name, e.g. {path / LOG_NAME}")
    if path.exists() and not os.access(path, os.W_OK):
        raise SinkError(f"--log {path}: file is not writable")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SinkError(f"--log {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SinkError(f"--log {path}: cannot write in {parent} (permission denied)")
    return path
