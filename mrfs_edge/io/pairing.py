"""Visible/infrared pairs from two sources: by position or name for files, by capture time for cameras."""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import get_args

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.capture import ImageFilesSource
from mrfs_edge.io.factory import open_source
from mrfs_edge.io.source import BadFrame, BadFramePolicy, Frame, Source
from mrfs_edge.io.uri import redact

LOG = logging.getLogger(__name__)

# Skipped frames named in a run's log: enough for any folder, bounded for a camera left running for days.
MAX_SKIPPED_LISTED = 1000


def take_pair(visible: deque[Frame], infrared: deque[Frame], tolerance_s: float) -> tuple[Frame, Frame] | None:
    """Pop the oldest visible/infrared frames closer than ``tolerance_s``; discard unmatchable ones.

    Both deques are in capture order. A head frame is discarded when it is too old for any
    partner still to come, or when the next frame of its stream is a closer match.
    """
    while visible and infrared:
        v, i = visible[0], infrared[0]
        if len(visible) > 1 and abs(visible[1].timestamp_s - i.timestamp_s) < abs(v.timestamp_s - i.timestamp_s):
            visible.popleft()
        elif len(infrared) > 1 and abs(infrared[1].timestamp_s - v.timestamp_s) < abs(i.timestamp_s - v.timestamp_s):
            infrared.popleft()
        elif abs(v.timestamp_s - i.timestamp_s) <= tolerance_s:
            return visible.popleft(), infrared.popleft()
        else:
            (visible if v.timestamp_s < i.timestamp_s else infrared).popleft()
    return None


class _LiveReader(threading.Thread):
    """Reads one live source as fast as it delivers into a short deque (oldest frames fall out)."""

    def __init__(self, source: Source, buffer: int, ready: threading.Condition,
                 bad_frame: Callable[[BadFrame], None]) -> None:
        super().__init__(name=f"capture-{source.role}", daemon=True)
        self.source, self.ready, self.bad_frame = source, ready, bad_frame
        self.frames: deque[Frame] = deque(maxlen=buffer)
        self.error: BaseException | None = None
        self.ended = False
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    frame = self.source.read()
                except BadFrame as exc:
                    self.bad_frame(exc)      # raises unless bad frames are skipped
                    continue
                if frame is None:
                    break
                with self.ready:
                    self.frames.append(frame)
                    self.ready.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread, which re-raises it
            self.error = exc
        finally:
            with self.ready:
                self.ended = True
                self.ready.notify_all()


class PairedSource:
    """Visible/infrared frame pairs from two sources.

    Files and folders pair by position (folders on both sides: by file stem, as
    :class:`~mrfs_edge.io.pairs.PairFolder` does); live sources pair by capture time within
    ``tolerance_s``, each read in its own thread so one slow camera does not stall the other.

    A frame that cannot be read (:class:`~mrfs_edge.io.source.BadFrame`) ends the pairs with that
    error under ``on_bad_frame="stop"``; under ``"skip"`` it is logged, counted in ``skipped``,
    named in ``skipped_frames`` (the first :data:`MAX_SKIPPED_LISTED`), and its partner is dropped
    with it. By default cameras and streams skip (one bad frame must not end a drive) and files
    stop (a corrupt file in a data set should be seen).
    """

    def __init__(self, visible: Source, infrared: Source, tolerance_s: float = 0.02, buffer: int = 4,
                 on_bad_frame: BadFramePolicy | None = None) -> None:
        if visible.live != infrared.live:
            raise SourceError(f"{redact(visible.uri)} + {redact(infrared.uri)}: cannot pair a live camera with a "
                              "file source (their clocks are unrelated)")
        self.visible, self.infrared = visible, infrared
        self.tolerance_s, self.buffer = tolerance_s, buffer
        if on_bad_frame is not None and on_bad_frame not in get_args(BadFramePolicy):
            raise ValueError(f"on_bad_frame must be one of {get_args(BadFramePolicy)}, not {on_bad_frame!r}")
        self.live = visible.live
        self.on_bad_frame: BadFramePolicy = on_bad_frame or ("skip" if self.live else "stop")
        self.unpaired = self.skipped = 0
        self.skipped_frames: list[BadFrame] = []
        self._readers: list[_LiveReader] = []
        self._skip_lock = threading.Lock()

    @property
    def fps(self) -> float:
        return self.visible.fps

    def open(self) -> PairedSource:
        self.visible.open()
        self.infrared.open()
        if isinstance(self.visible, ImageFilesSource) and isinstance(self.infrared, ImageFilesSource) \
                and self.visible.path.is_dir() and self.infrared.path.is_dir():
            names = self.visible.names
            self.infrared.select(names)
        return self

    def close(self) -> None:
        """Stop the reader threads before releasing: releasing a capture mid-read can crash OpenCV."""
        for reader in self._readers:
            reader.stopping.set()
            reader.source.interrupt()
        for reader in self._readers:
            reader.join(timeout=2.0)
        if not any(reader.is_alive() for reader in self._readers):
            self.visible.close()
            self.infrared.close()

    def __iter__(self) -> Generator[tuple[Frame, Frame], None, None]:
        """Pairs until a source ends; closing the generator (or its end) releases both sources."""
        self.open()
        try:
            yield from (self._live_pairs() if self.live else self._file_pairs())
        finally:
            self.close()

    def _bad_frame(self, exc: BadFrame) -> None:
        """Raise ``exc`` (stop), or count, name and log it (skip)."""
        if self.on_bad_frame == "stop":
            raise exc
        with self._skip_lock:
            self.skipped += 1
            if len(self.skipped_frames) < MAX_SKIPPED_LISTED:
                self.skipped_frames.append(exc)
        LOG.warning("skipping bad %s frame %s: %s", exc.stream, exc.name, exc)

    def _read(self, source: Source, bad: list[BadFrame]) -> Frame | None:
        try:
            return source.read()
        except BadFrame as exc:
            bad.append(exc)
            return None

    def _file_pairs(self) -> Iterator[tuple[Frame, Frame]]:
        while True:
            bad: list[BadFrame] = []
            visible = self._read(self.visible, bad)
            # The partner of a bad frame is read too, so both files stay at the same position.
            infrared = self._read(self.infrared, bad) if visible is not None or bad else None
            if bad:
                for exc in bad:
                    self._bad_frame(exc)
                continue
            if visible is None or infrared is None:
                return
            yield visible, infrared

    def _live_pairs(self) -> Iterator[tuple[Frame, Frame]]:
        ready = threading.Condition()
        self._readers = [_LiveReader(s, self.buffer, ready, self._bad_frame) for s in (self.visible, self.infrared)]
        for reader in self._readers:
            reader.start()
        vis, ir = (r.frames for r in self._readers)
        while True:
            with ready:
                pair = None
                while pair is None:
                    before = len(vis) + len(ir)
                    pair = take_pair(vis, ir, self.tolerance_s)
                    self.unpaired += before - len(vis) - len(ir) - (2 if pair else 0)
                    failed = next((r for r in self._readers if r.ended), None)
                    if pair is None and failed is not None:
                        if failed.error is not None:
                            raise failed.error
                        return
                    if pair is None:
                        ready.wait(timeout=0.5)
            yield pair


def open_pair(visible_uri: str, infrared_uri: str, tolerance_s: float = 0.02, retries: int = 5,
              backoff_s: float = 0.5, on_bad_frame: BadFramePolicy | None = None) -> PairedSource:
    """Both sources for a run, each URI checked by :func:`~mrfs_edge.io.uri.parse_uri` first."""
    return PairedSource(open_source(visible_uri, "visible", retries, backoff_s),
                        open_source(infrared_uri, "infrared", retries, backoff_s), tolerance_s,
                        on_bad_frame=on_bad_frame)
