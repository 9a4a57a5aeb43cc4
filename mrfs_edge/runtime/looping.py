"""Recorded frames replayed without end, optionally paced like a camera: soaks, demos and kill tests.

A soak has to run the pipeline for an hour on the dozen bundled pairs, and a recording test has
to keep a real run going until it is killed, so a file source is replayed from its first frame
each time it ends.

Paced (``fps`` given), the replay stands in for a camera: it is ``live``, so its frames are
stamped with the monotonic clock at capture, read by the pairing's reader threads, paired by
capture time and dropped by the pipeline when the model is slower, exactly as a camera's are.
Both streams tick on one grid (whole multiples of ``1/fps`` of the monotonic clock), so the two
capture times of a pair agree to within the decoding jitter. Unpaced, every frame is processed
in order and the reader waits for the model, as for any file.
"""
from __future__ import annotations

import math
import time

import numpy as np

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.capture import ImageFilesSource
from mrfs_edge.io.pairing import PairedSource
from mrfs_edge.io.source import Source
from mrfs_edge.io.uri import redact


class LoopingSource(Source):
    """``inner`` (a file source) from its first frame again each time it ends.

    ``names`` keeps a folder's frames to these stems in this order on every pass (the pairing
    by stem that :class:`~mrfs_edge.io.pairing.PairedSource` makes once for folders).
    """

    def __init__(self, inner: Source, fps: float | None = None, names: list[str] | None = None) -> None:
        if inner.live:
            raise SourceError(f"{redact(inner.uri)}: a camera or stream cannot be replayed; loop files only")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, not {fps}")
        super().__init__(inner.uri, inner.role, retries=0)
        self.inner, self.pace_fps, self.names = inner, fps, names
        self.live = fps is not None
        self.loops = 0
        self._inner_name = ""
        self._tick: float | None = None

    def _open(self) -> None:
        self._open_inner()
        self.fps = self.pace_fps or self.inner.fps

    def _open_inner(self) -> None:
        self.inner.open()
        if self.names is not None and isinstance(self.inner, ImageFilesSource):
            self.inner.select(self.names)

    def _release(self) -> None:
        self.inner.close()

    def _grab(self) -> np.ndarray | None:
        # The tick is chosen before decoding: a decode that overruns it makes the frame late, not
        # one tick behind its partner's (which would leave both unpaired).
        tick = None if self.pace_fps is None else math.floor(time.monotonic() * self.pace_fps + 1.0) / self.pace_fps
        self._tick = tick
        frame = self.inner.read()
        if frame is None:
            self.inner.close()
            self._open_inner()
            self.loops += 1
            frame = self.inner.read()
            if frame is None:
                raise SourceError(f"{redact(self.uri)}: no frames to replay")
        self._inner_name = frame.name
        if tick is not None and self._closing.wait(max(tick - time.monotonic(), 0.0)):
            return None         # interrupted: the run is stopping
        return frame.image

    def _capture_time_s(self) -> float:
        """The frame's tick when paced: the capture time a camera's sensor would give it, not the
        moment a busy machine let the reader thread run again."""
        return self._tick if self._tick is not None else time.monotonic()

    def _frame_name(self, index: int) -> str:
        """The replayed frame's own name and the pass, so per-frame outputs of each pass stay apart."""
        return f"{self._inner_name}_loop{self.loops:04d}"


def loop_pair(source: PairedSource, fps: float | None = None) -> PairedSource:
    """``source``'s two streams replayed without end (paced at ``fps`` when given, and then live)."""
    source.open()           # pairs folders by stem: the order each pass keeps
    names = None
    if isinstance(source.visible, ImageFilesSource) and isinstance(source.infrared, ImageFilesSource) \
            and source.visible.path.is_dir() and source.infrared.path.is_dir():
        names = source.visible.names
    return PairedSource(LoopingSource(source.visible, fps, names), LoopingSource(source.infrared, fps, names),
                        source.tolerance_s, source.buffer, on_bad_frame=source.on_bad_frame)
