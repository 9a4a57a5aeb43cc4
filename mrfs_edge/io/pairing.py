"""Visible/infrared pairs from two sources: by position or name for files, by capture time for cameras."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Generator, Iterator

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.capture import ImageFilesSource
from mrfs_edge.io.factory import open_source
from mrfs_edge.io.source import Frame, Source
from mrfs_edge.io.uri import redact


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

    def __init__(self, source: Source, buffer: int, ready: threading.Condition) -> None:
        super().__init__(name=f"capture-{source.role}", daemon=True)
        self.source, self.ready = source, ready
        self.frames: deque[Frame] = deque(maxlen=buffer)
        self.error: BaseException | None = None
        self.ended = False
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and (frame := self.source.read()) is not None:
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
    """

    def __init__(self, visible: Source, infrared: Source, tolerance_s: float = 0.02, buffer: int = 4) -> None:
        if visible.live != infrared.live:
            raise SourceError(f"{redact(visible.uri)} + {redact(infrared.uri)}: cannot pair a live camera with a "
                              "file source (their clocks are unrelated)")
        self.visible, self.infrared = visible, infrared
        self.tolerance_s, self.buffer = tolerance_s, buffer
        self.live = visible.live
        self.unpaired = 0
        self._readers: list[_LiveReader] = []

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

    def _file_pairs(self) -> Iterator[tuple[Frame, Frame]]:
        while True:
            visible = self.visible.read()
            infrared = self.infrared.read() if visible is not None else None
            if visible is None or infrared is None:
                return
            yield visible, infrared

    def _live_pairs(self) -> Iterator[tuple[Frame, Frame]]:
        ready = threading.Condition()
        self._readers = [_LiveReader(s, self.buffer, ready) for s in (self.visible, self.infrared)]
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
              backoff_s: float = 0.5) -> PairedSource:
    """Both sources for a run, each URI checked by :func:`~mrfs_edge.io.uri.parse_uri` first."""
    return PairedSource(open_source(visible_uri, "visible", retries, backoff_s),
                        open_source(infrared_uri, "infrared", retries, backoff_s), tolerance_s)
