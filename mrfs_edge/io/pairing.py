"""Visible/infrared pairs from two sources: by position or name for files, by capture time for cameras.

RGB/thermal rigs rarely have hardware sync, and thermal cameras often run at 9 fps beside a 30 fps
colour camera, so live frames are paired by capture time: each pair's two capture times differ
by at most the pairing's maximum skew, no frame is used twice, and every frame that found no
partner is counted per camera (:class:`Pairer`). The skew of the pairs made is kept as a
fixed-size histogram (:class:`SkewStats`: percentiles for an hour or a day in constant memory).
A camera that stops delivering while the other goes on pauses the pairing, with one line saying
so, and the pairing resumes when its frames come back; :meth:`PairedSource.status` tells a
status line, a log or a test where the pairing stands.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from typing import get_args

import numpy as np

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.capture import ImageFilesSource
from mrfs_edge.io.factory import open_source
from mrfs_edge.io.source import ROLES, BadFrame, BadFramePolicy, Frame, Source, Stream
from mrfs_edge.io.uri import redact

LOG = logging.getLogger(__name__)

# Skipped frames named in a run's log: enough for any folder, bounded for a camera left running for days.
MAX_SKIPPED_LISTED = 1000
DEFAULT_MAX_SKEW_S = 0.02       # two frames of a pair at most 20 ms apart (a 30 fps frame lasts 33 ms)
DEFAULT_STALL_S = 1.0           # a camera silent this long pauses the pairing (9 fps thermal: 9 frames)
STARTUP_GRACE_S = 5.0           # ... and one that has sent no frame yet, this long after the start
DEFAULT_BUFFER = 8              # frames held per camera while its partner's come (8 at 30 fps: 267 ms)
SKEW_BIN_S = 1e-4               # skew histogram resolution: 0.1 ms


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


class SkewStats:
    """Skews of the pairs made, as a histogram of 0.1 ms bins up to the maximum skew.

    Constant memory however long the run (a list of every skew grows by 30 floats a second);
    percentiles are exact to the bin width, the maximum exactly.
    """

    def __init__(self, max_skew_s: float) -> None:
        self.counts = np.zeros(math.ceil(max_skew_s / SKEW_BIN_S) + 1, np.int64)
        self.count = 0
        self.total_s = self.max_s = 0.0

    def add(self, skew_s: float) -> None:
        self.counts[min(int(skew_s / SKEW_BIN_S), len(self.counts) - 1)] += 1
        self.count += 1
        self.total_s += skew_s
        self.max_s = max(self.max_s, skew_s)

    def percentile_s(self, q: float) -> float:
        """The skew below which ``q`` percent of the pairs lie (upper edge of its bin, at most the maximum)."""
        rank = max(math.ceil(q / 100.0 * self.count), 1)
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min((index + 1) * SKEW_BIN_S, self.max_s)

    def summary_ms(self) -> dict[str, float] | None:
        """p50/p95/p99/max/mean in ms; ``None`` before the first pair."""
        if not self.count:
            return None
        figures = {f"p{q}": self.percentile_s(q) for q in (50, 95, 99)}
        figures.update(max=self.max_s, mean=self.total_s / self.count)
        return {name: round(1000.0 * value, 2) for name, value in figures.items()}


@dataclass(frozen=True)
class PairingStatus:
    """Where the pairing stands: what a status line shows, a run log keeps and a test reads.

    ``stalled`` names the cameras that delivered nothing for ``stall_s`` (since the pairing
    started, for one that never has); ``paused`` is true while any is, and ``message`` then says
    so in one line, e.g. ``visible: no frame for 2.1 s; pairing paused, infrared continues``.
    """

    pairs: int
    unpaired: dict[str, int]            # per camera: frames that found no partner within max_skew_ms
    max_skew_ms: float
    skew_ms: dict[str, float] | None    # p50, p95, p99, max, mean of the pairs made
    stalled: tuple[str, ...]
    silent_s: dict[str, float]          # per camera: seconds since its last frame
    paused: bool
    message: str | None
    pauses: int                         # times the pairing paused so far

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Pairer:
    """Pairs live frames by capture time as they arrive from two cameras (not thread-safe: the
    caller holds a lock). Frames wait in one bounded buffer per camera; one that falls out of a
    full buffer, or that :func:`take_pair` discards, is counted unpaired for its camera.

    With ``stall_s`` (``None``: never), a camera whose last frame is older than that, or that
    has delivered none :data:`STARTUP_GRACE_S` after the start (cameras take a while to
    deliver their first frame), is stalled: the pairing is paused until it delivers again.
    """

    def __init__(self, max_skew_s: float = DEFAULT_MAX_SKEW_S, buffer: int = DEFAULT_BUFFER,
                 stall_s: float | None = DEFAULT_STALL_S, started: float | None = None) -> None:
        if not max_skew_s > 0 or (stall_s is not None and not stall_s > 0) or buffer < 1:
            raise ValueError(f"need max_skew_s > 0, stall_s > 0 and buffer >= 1, got {max_skew_s}, {stall_s}, {buffer}")
        self.max_skew_s, self.stall_s, self.buffer = max_skew_s, stall_s, buffer
        self.frames: dict[str, deque[Frame]] = {role: deque() for role in ROLES}
        self.unpaired = dict.fromkeys(ROLES, 0)
        self.pairs = self.pauses = 0
        self.skew = SkewStats(max_skew_s)
        self.started = time.monotonic() if started is None else started
        self.last_arrival: dict[str, float | None] = dict.fromkeys(ROLES)
        self.stalled: tuple[str, ...] = ()
        self.finished: float | None = None     # when the cameras stopped being read: silence ends there
        self._silent_from: dict[str, float] = {}

    def _now(self, now: float | None) -> float:
        now = time.monotonic() if now is None else now
        return now if self.finished is None else min(now, self.finished)

    def finish(self, now: float | None = None) -> None:
        """The cameras are no longer read (the run is ending): a status after this is the last one
        while they were, not a growing silence of cameras nobody reads any more."""
        self.finished = self._now(now)

    def push(self, stream: Stream, frame: Frame, now: float | None = None) -> None:
        """A frame of ``stream`` arrived (at ``now``, monotonic; default: the present)."""
        frames = self.frames[stream]
        if len(frames) >= self.buffer:
            frames.popleft()
            self.unpaired[stream] += 1
        frames.append(frame)
        self.last_arrival[stream] = time.monotonic() if now is None else now

    def pop(self) -> tuple[Frame, Frame] | None:
        """The next pair of the buffered frames within the maximum skew, or ``None`` until more arrive."""
        return self.take(self.frames["visible"], self.frames["infrared"])

    def take(self, visible: deque[Frame], infrared: deque[Frame]) -> tuple[Frame, Frame] | None:
        """:func:`take_pair` on the caller's deques (a replay that reads its own), counted here."""
        before = len(visible), len(infrared)
        pair = take_pair(visible, infrared, self.max_skew_s)
        made = 1 if pair is not None else 0
        self.unpaired["visible"] += before[0] - len(visible) - made
        self.unpaired["infrared"] += before[1] - len(infrared) - made
        if pair is not None:
            self.pairs += 1
            self.skew.add(abs(pair[0].timestamp_s - pair[1].timestamp_s))
        return pair

    def silent_s(self, now: float) -> dict[str, float]:
        """Seconds since each camera's last frame (since the start, for one that has sent none)."""
        return {role: max(now - (last if last is not None else self.started), 0.0)
                for role, last in self.last_arrival.items()}

    def _stalled(self, silent: dict[str, float]) -> tuple[str, ...]:
        if self.stall_s is None:
            return ()
        return tuple(role for role in ROLES
                     if silent[role] >= (self.stall_s if self.last_arrival[role] is not None
                                         else max(self.stall_s, STARTUP_GRACE_S)))

    def update(self, now: float | None = None) -> None:
        """Log a camera going silent or coming back, once, as it happens (call it often)."""
        now = self._now(now)
        stalled = self._stalled(self.silent_s(now))
        if stalled != self.stalled:
            for role in stalled:
                self._silent_from.setdefault(role, self.last_arrival[role] or self.started)
            if stalled and not self.stalled:
                self.pauses += 1
                LOG.warning(self.status(now).message)
            for role in self.stalled:
                if role not in stalled:
                    gap = (self.last_arrival[role] or now) - self._silent_from.pop(role, self.started)
                    LOG.info(f"{role}: frames again after {gap:.1f} s; pairing "
                             f"{'still paused' if stalled else 'resumed'}")
            self.stalled = stalled

    def status(self, now: float | None = None) -> PairingStatus:
        now = self._now(now)
        silent = self.silent_s(now)
        stalled = self._stalled(silent)
        message = None
        if stalled:
            gaps = ", ".join(f"{role}: no frame for {silent[role]:.1f} s" for role in stalled)
            going = [role for role in ROLES if role not in stalled]
            message = f"{gaps}; pairing paused" + (f", {going[0]} continues" if going else "")
        return PairingStatus(pairs=self.pairs, unpaired=dict(self.unpaired), max_skew_ms=round(1000 * self.max_skew_s, 3),
                             skew_ms=self.skew.summary_ms(), stalled=stalled,
                             silent_s={role: round(value, 3) for role, value in silent.items()},
                             paused=bool(stalled), message=message,
                             pauses=self.pauses + (1 if stalled and not self.stalled else 0))


class _LiveReader(threading.Thread):
    """Reads one live source as fast as it delivers, handing each frame to the pairer."""

    def __init__(self, source: Source, pairer: Pairer, ready: threading.Condition,
                 bad_frame: Callable[[BadFrame], None]) -> None:
        super().__init__(name=f"capture-{source.role}", daemon=True)
        self.source, self.pairer, self.ready, self.bad_frame = source, pairer, ready, bad_frame
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
                    self.pairer.push(self.source.role, frame)
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
    ``tolerance_s`` (the maximum skew), each read in its own thread so one slow camera does not
    stall the other, through a :class:`Pairer` whose :class:`PairingStatus` :meth:`status`
    returns (from any thread): pairs, unpaired frames per camera, skew percentiles, and whether a
    camera that went silent for ``stall_s`` has paused the pairing.

    A frame that cannot be read (:class:`~mrfs_edge.io.source.BadFrame`) ends the pairs with that
    error under ``on_bad_frame="stop"``; under ``"skip"`` it is logged, counted in ``skipped``,
    named in ``skipped_frames`` (the first :data:`MAX_SKIPPED_LISTED`), and its partner is dropped
    with it. By default cameras and streams skip (one bad frame must not end a drive) and files
    stop (a corrupt file in a data set should be seen).
    """

    def __init__(self, visible: Source, infrared: Source, tolerance_s: float = DEFAULT_MAX_SKEW_S,
                 buffer: int = DEFAULT_BUFFER, on_bad_frame: BadFramePolicy | None = None,
                 stall_s: float = DEFAULT_STALL_S) -> None:
        if visible.live != infrared.live:
            raise SourceError(f"{redact(visible.uri)} + {redact(infrared.uri)}: cannot pair a live camera with a "
                              "file source (their clocks are unrelated)")
        self.visible, self.infrared = visible, infrared
        self.tolerance_s, self.buffer, self.stall_s = tolerance_s, buffer, stall_s
        if on_bad_frame is not None and on_bad_frame not in get_args(BadFramePolicy):
            raise ValueError(f"on_bad_frame must be one of {get_args(BadFramePolicy)}, not {on_bad_frame!r}")
        self.live = visible.live
        self.on_bad_frame: BadFramePolicy = on_bad_frame or ("skip" if self.live else "stop")
        self.unpaired = self.skipped = 0
        self.skipped_frames: list[BadFrame] = []
        self._readers: list[_LiveReader] = []
        self._skip_lock = threading.Lock()
        self._ready = threading.Condition()
        self.pairer = Pairer(tolerance_s, buffer, stall_s if self.live else None)

    def status(self) -> PairingStatus:
        """Where the pairing stands now (thread-safe; see :class:`PairingStatus`). Files pair by
        position: their pairs are counted, without skew (their timestamps are positions)."""
        with self._ready:
            return self.pairer.status()

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
            self.pairer.pairs += 1
            yield visible, infrared

    def _live_pairs(self) -> Iterator[tuple[Frame, Frame]]:
        ready = self._ready
        with ready:
            self.pairer = Pairer(self.tolerance_s, self.buffer, self.stall_s)
        self._readers = [_LiveReader(s, self.pairer, ready, self._bad_frame) for s in (self.visible, self.infrared)]
        for reader in self._readers:
            reader.start()
        try:
            yield from self._pairs_as_they_come()
        finally:
            with ready:
                self.pairer.finish()

    def _pairs_as_they_come(self) -> Iterator[tuple[Frame, Frame]]:
        ready = self._ready
        # Woken by every frame, and at least this often to notice a camera going silent.
        check_s = min(0.1, self.stall_s / 4)
        while True:
            with ready:
                pair = None
                while pair is None:
                    pair = self.pairer.pop()
                    self.unpaired = sum(self.pairer.unpaired.values())
                    self.pairer.update()
                    failed = next((r for r in self._readers if r.ended), None)
                    if pair is None and failed is not None:
                        if failed.error is not None:
                            raise failed.error
                        return
                    if pair is None:
                        ready.wait(timeout=check_s)
            yield pair


def open_pair(visible_uri: str, infrared_uri: str, tolerance_s: float = DEFAULT_MAX_SKEW_S, retries: int = 5,
              backoff_s: float = 0.5, on_bad_frame: BadFramePolicy | None = None,
              stall_s: float = DEFAULT_STALL_S) -> PairedSource:
    """Both sources for a run, each URI checked by :func:`~mrfs_edge.io.uri.parse_uri` first."""
    return PairedSource(open_source(visible_uri, "visible", retries, backoff_s),
                        open_source(infrared_uri, "infrared", retries, backoff_s), tolerance_s,
                        on_bad_frame=on_bad_frame, stall_s=stall_s)
