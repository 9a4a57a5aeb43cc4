"""The frame and the source base class: open, grab, release, and reconnect a live camera with backoff.

One source is one stream (visible or infrared). Concrete sources are in
:mod:`mrfs_edge.io.capture`, :func:`~mrfs_edge.io.factory.open_source` picks one for a URI, and
:mod:`mrfs_edge.io.pairing` reads two as visible/infrared pairs. Live sources stamp frames with
the monotonic clock at capture and reconnect with backoff when a camera drops out; file sources
simply end.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from mrfs_edge.core.errors import ImageError, SourceError
from mrfs_edge.io.uri import redact

LOG = logging.getLogger(__name__)

_S = TypeVar("_S", bound="Source")  # typing.Self is 3.11+: JetPack 5/6 run 3.8/3.10

Stream = Literal["visible", "infrared"]
ROLES = ("visible", "infrared")
# What a run does with a frame that cannot be read: end there (after the frames before it) or go on.
BadFramePolicy = Literal["stop", "skip"]
IMAGE_SEQUENCE_FPS = 10.0   # nominal rate of folders and single images (timestamps, output videos)
MAX_BACKOFF_S = 8.0


@dataclass
class Frame:
    """One captured image: RGB visible or grey (8/16-bit) infrared, with where it came from."""

    image: np.ndarray
    timestamp_s: float
    index: int
    name: str
    # Capture time in integer ns since the epoch where the source recorded one (a bag message's stamp):
    # exact, unlike the float ``timestamp_s``, so an output can carry its input's stamp to the nanosecond.
    stamp_ns: int | None = None


class BadFrame(SourceError):
    """One frame of a stream could not be read (a corrupt or unreadable image file).

    The source has moved past it, so a caller that skips bad frames reads on from the next one;
    ``str()`` is the reader's one-line message naming the file.
    """

    def __init__(self, message: str, stream: Stream, index: int, name: str) -> None:
        super().__init__(message)
        self.stream, self.index, self.name = stream, index, name


class Source(ABC):
    """A stream of :class:`Frame` s; subclasses open, grab and release the device or files.

    ``read()`` returns ``None`` at the end of a file source. A live source that stops
    delivering is logged, released and reopened up to ``retries`` times with exponential
    backoff before :class:`SourceError` ends the run.
    """

    live = False

    def __init__(self, uri: str, role: Stream = "visible", retries: int = 5, backoff_s: float = 0.5) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        self.uri, self.role = uri, role
        self.retries, self.backoff_s = retries, backoff_s
        self.fps = IMAGE_SEQUENCE_FPS
        self.reconnects = 0
        self._index = 0
        self._opened = False
        self._closing = threading.Event()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.uri)!r}, role={self.role!r})"

    @abstractmethod
    def _open(self) -> None:
        """Open the device or files; raise :class:`SourceError` naming the URI on failure."""

    @abstractmethod
    def _grab(self) -> np.ndarray | None:
        """The next image in the role's layout, or ``None`` when none came."""

    def _release(self) -> None:
        """Free the device; nothing by default."""

    def _frame_name(self, index: int) -> str:
        """``<stream>_<index>``, safe as a file name (sinks name their outputs after frames)."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.uri.partition("?")[0].rstrip("/")).stem).strip("_.")
        return f"{stem or self.role}_{index:06d}"

    def _position_s(self, index: int) -> float:
        """Stream time of a file frame (live frames are stamped at capture instead)."""
        return index / self.fps

    def _capture_time_s(self) -> float:
        """Capture time of the frame just grabbed, on the monotonic clock that pairing compares.

        The moment of reading by default; a source that knows when the sensor delivered the frame
        (GStreamer's buffer timestamps, :mod:`mrfs_edge.io.gst`) returns that instead, so frames
        queued in a driver or a jitter buffer are not stamped late.
        """
        return time.monotonic()

    def open(self: _S) -> _S:  # noqa: PYI019 - typing.Self is 3.11+
        """Open (again) for reading; a closed file source starts over from its first frame."""
        if not self._opened:
            self._closing.clear()
            self._open()
            self._opened = True
            self._index = 0
        return self

    def interrupt(self) -> None:
        """Cut a reconnect backoff short (from another thread) so a stopping run does not wait."""
        self._closing.set()

    def close(self) -> None:
        self.interrupt()
        if self._opened:
            self._release()
            self._opened = False

    def read(self) -> Frame | None:
        """The next frame, ``None`` at the end; :class:`BadFrame` (and on to the next) for an unreadable one."""
        self.open()
        try:
            image = self._grab()
        except ImageError as exc:
            index = self._index
            self._index += 1
            raise BadFrame(str(exc), self.role, index, self._frame_name(index)) from exc
        if image is None and self.live:
            image = self._reconnect()
        if image is None:
            return None
        index = self._index
        self._index += 1
        stamp = self._capture_time_s() if self.live else self._position_s(index)
        return Frame(image, stamp, index, self._frame_name(index))

    def _reconnect(self) -> np.ndarray | None:
        for attempt in range(1, self.retries + 1):
            if self._closing.is_set():      # stopped (interrupt): no frame is expected, nothing to report
                return None
            delay = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            LOG.warning("%s: no frame (camera disconnected?); reconnecting in %.1fs (attempt %d/%d)",
                        redact(self.uri), delay, attempt, self.retries)
            if self._closing.wait(delay):
                return None
            self._release()
            try:
                self._open()
            except SourceError:
                continue
            image = self._grab()
            if image is not None:
                self.reconnects += 1
                return image
        if self._closing.is_set():
            return None
        raise SourceError(f"{redact(self.uri)}: stopped delivering frames; gave up after {self.retries} reconnect attempts")

    def __iter__(self) -> Iterator[Frame]:
        try:
            while (frame := self.read()) is not None:
                yield frame
        finally:
            self.close()

    def __enter__(self: _S) -> _S:  # noqa: PYI019 - typing.Self is 3.11+
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
