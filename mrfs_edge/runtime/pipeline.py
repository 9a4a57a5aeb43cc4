"""The real-time loop: capture, preprocess, model, postprocess and output, one thread each.

Each stage hands its result to the next through a small bounded queue, so while the model runs
on frame *n*, frame *n+1* is being prepared and frame *n-1* restored and drawn: with pre/post
work off the model's thread the loop runs at the model's own rate (see
:mod:`mrfs_edge.runtime.throughput`). Cameras do not wait for a slow model, so with live sources
the queue before the model and the one after it keep only the newest frames and count the ones
they drop (latency stays bounded instead of growing without end); with files every frame is
processed and the reader waits instead. Per-stage timings and FPS go to a status line and, at the
end, to a JSON log. Ctrl-C or SIGTERM stops capture, lets the queued frames finish and always
finalises outputs, so a video file is playable after a stop; a second signal drops the queued
frames, but the frame being written still completes before the outputs are closed.

A stage that fails stops the stages before it; the stages after it finish the frames already
handed to them. So a corrupt image in a folder ends the run with its one-line error only after
every frame read before it is processed and written (or, with the sources' ``on_bad_frame="skip"``,
is logged and skipped: see :class:`~mrfs_edge.io.pairing.PairedSource`).
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mrfs_edge.backends.base import Runner
from mrfs_edge.core.contract import ModelContract
from mrfs_edge.core.errors import SinkError, SourceError
from mrfs_edge.core.files import write_json_atomic
from mrfs_edge.io.pairing import PairedSource
from mrfs_edge.io.sinks import Rendered, SegmentedVideoSink, Sink
from mrfs_edge.io.source import Frame
from mrfs_edge.io.uri import redact
from mrfs_edge.processing.frame import FrameProcessor, PairSizeError, PreparedFrame
from mrfs_edge.processing.registration import Registration
from mrfs_edge.processing.thermal import ThermalAGC

LOG = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "model", "postprocess", "output")
SKIPPED_NAMED_AT_END = 5        # the end-of-run line names this many skipped frames; the log names all


# --- plumbing ---------------------------------------------------------------------------------

class FrameQueue:
    """Bounded hand-over between two threads: drop the oldest item (live) or wait (files).

    A waiting producer never loses an item at a stop: consumers drain their queue until it is
    closed. Only a consumer that has gone (an error) ``abandon``-s it, which releases the producer.
    """

    def __init__(self, maxsize: int, drop_oldest: bool) -> None:
        self.items: deque[Any] = deque()
        self.maxsize, self.drop_oldest = max(1, maxsize), drop_oldest
        self.dropped = 0
        self.closed = self.abandoned = False
        self._cond = threading.Condition()

    def put(self, item: Any) -> None:
        with self._cond:
            while len(self.items) >= self.maxsize and not self.drop_oldest and not self.abandoned:
                self._cond.wait(timeout=0.1)
            if self.abandoned:
                return
            if len(self.items) >= self.maxsize:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self._cond.notify_all()

    def get(self) -> Any | None:
        """The oldest item, or ``None`` once the producer closed the queue and it is empty."""
        with self._cond:
            while not self.items and not self.closed:
                self._cond.wait(timeout=0.1)
            item = self.items.popleft() if self.items else None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """Producer side: nothing more will come."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def abandon(self) -> None:
        """Consumer side: nothing more will be taken; pending and future items are discarded."""
        with self._cond:
            self.abandoned = True
            self.items.clear()
            self._cond.notify_all()


class RunStats:
    """Per-stage wall times (whole-run mean, recent percentiles) and frame counters.

    ``warmup`` output frames are left out of :meth:`steady_fps`: the first frames pay for
    session start-up and for filling the stages, which a throughput figure must not include.
    """

    def __init__(self, window: int = 1024, warmup: int = 0) -> None:
        self.started = time.perf_counter()
        self.recent: dict[str, deque[float]] = {stage: deque(maxlen=window) for stage in STAGES}
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.counts = dict.fromkeys(STAGES, 0)
        self.output_times: deque[float] = deque(maxlen=30)
        self.captured = self.processed = self.written = 0
        self.warmup = warmup
        self.steady_started: float | None = None if warmup else self.started
        self.last_written: float | None = None
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.recent[stage].append(seconds)
            self.totals[stage] += seconds
            self.counts[stage] += 1

    def mark_written(self) -> None:
        now = time.perf_counter()
        with self._lock:
            self.written += 1
            self.output_times.append(now)
            self.last_written = now
            if self.written == self.warmup:
                self.steady_started = now

    @property
    def steady_frames(self) -> int:
        """Frames written after the warm-up ones."""
        return max(self.written - self.warmup, 0)

    def steady_fps(self) -> float:
        """Output rate after the warm-up frames (whole run when ``warmup`` is 0)."""
        with self._lock:
            start, end, frames = self.steady_started, self.last_written, self.steady_frames
        if start is None or end is None or frames == 0 or end <= start:
            return 0.0
        return frames / (end - start)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def fps(self) -> float:
        """Recent output rate (last 30 frames), so the status reacts to changes."""
        with self._lock:
            times = list(self.output_times)
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def mean_ms(self, stage: str) -> float:
        with self._lock:
            recent = list(self.recent[stage])
        return 1000.0 * sum(recent) / len(recent) if recent else 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = {}
        with self._lock:
            for stage in STAGES:
                recent = np.asarray(self.recent[stage]) * 1000.0
                if not len(recent):
                    continue
                result[stage] = {"mean_ms": round(1000.0 * self.totals[stage] / self.counts[stage], 3),
                                 "p50_ms": round(float(np.percentile(recent, 50)), 3),
                                 "p95_ms": round(float(np.percentile(recent, 95)), 3),
                                 "max_ms": round(float(recent.max()), 3), "count": self.counts[stage]}
        return result


@dataclass
class PipelineOptions:
    queue_size: int = 2
    max_frames: int | None = None
    drop_oldest: bool | None = None     # None: drop when the sources are live, wait for files
    status_interval_s: float = 1.0      # 0: no status line (nor with logging above INFO, e.g. -q)
    log_path: Path | None = None       # written unless the run fails before its first frame
    max_width: int = 2560               # composite width cap
    warmup_frames: int = 0              # output frames left out of the log's steady_fps


@dataclass
class _InFlight:
    """A pair on its way through the model (``outputs`` filled in by the model stage)."""

    visible: Frame
    prepared: PreparedFrame
    outputs: dict[str, np.ndarray] | None = None


@dataclass
class _Processed:
    visible: Frame
    infrared8: np.ndarray
    labels: np.ndarray
    fused: np.ndarray


class Pipeline:
    """Runs ``runner`` on every pair of ``source`` and hands composites to ``sinks``.

    Each stage thread runs one step of a :class:`~mrfs_edge.processing.frame.FrameProcessor`,
    so the threaded loop gives exactly the pixels of ``FrameProcessor.process``.
    """

    def __init__(self, runner: Runner, source: PairedSource, sinks: Sequence[Sink],
                 thermal: ThermalAGC | None = None, registration: Registration | None = None,
                 options: PipelineOptions | None = None, registration_path: str | None = None) -> None:
        self.runner, self.source, self.sinks = runner, source, list(sinks)
        self.thermal = thermal or ThermalAGC()
        self.registration, self.registration_path = registration, registration_path
        self.options = options or PipelineOptions()
        self.processor = FrameProcessor(runner, self.thermal, registration, self.options.max_width)
        self.stats = RunStats(warmup=self.options.warmup_frames)
        self.stopped_by = "end"
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._last_status = ""
        self._failed: set[int] = set()          # indices in STAGES of the stages that raised
        self._aborted = False                   # a second signal: queued frames are dropped
        self._sink_lock = threading.Lock()      # a frame being written completes before the sinks close
        self._sinks_closed = False
        drop = self.options.drop_oldest if self.options.drop_oldest is not None else source.live
        # Live frames are dropped only before preprocessing (so no work is spent on a frame that is
        # then thrown away) and after the model (raw outputs, cheapest to drop). The hand-overs in
        # between wait and hold one item: enough to keep the model busy, no added latency.
        self.frames = FrameQueue(self.options.queue_size, drop)
        self.feeds = FrameQueue(1, False)
        self.results = FrameQueue(self.options.queue_size, drop)
        self.restored = FrameQueue(1, False)

    @property
    def contract(self) -> ModelContract:
        return self.runner.contract

    @property
    def dropped(self) -> int:
        return self.frames.dropped + self.results.dropped

    def stop(self, reason: str = "stop") -> None:
        """Ask every stage to finish (thread-safe; the first reason is the one logged)."""
        if not self._stopping.is_set():
            self.stopped_by = reason
            self._stopping.set()

    # --- stages ---------------------------------------------------------------------------

    def _capture(self) -> None:
        with closing(self.source.__iter__()) as pairs:     # a generator: closing releases the sources
            while not self._stopping.is_set():
                start = time.perf_counter()
                pair = next(pairs, None)
                if pair is None:
                    return
                self.stats.add("capture", time.perf_counter() - start)
                self.stats.captured += 1
                self.frames.put(pair)
                if self.options.max_frames and self.stats.captured >= self.options.max_frames:
                    self.stop("max_frames")

    def prepare(self, visible: Frame, infrared: Frame) -> PreparedFrame:
        """Gain control, registration, size check and model feed for one pair."""
        try:
            return self.processor.prepare(visible.image, infrared.image, (visible.name, infrared.name))
        except PairSizeError as exc:
            raise SourceError(f"{redact(self.source.infrared.uri)}: {exc}") from None

    def _take(self, queue: FrameQueue, stage: str) -> Any | None:
        """The next item for a stage, or ``None`` when its input ended, a stage after it failed
        (nothing it made would be used) or the run was aborted.

        A stage before it failing is no reason to stop: the frames already handed on are finished.
        """
        item = queue.get()
        index = STAGES.index(stage)
        if self._aborted or any(failed > index for failed in self._failed):
            return None
        return item

    def _preprocess(self) -> None:
        while (pair := self._take(self.frames, "preprocess")) is not None:
            visible, infrared = pair
            start = time.perf_counter()
            prepared = self.prepare(visible, infrared)
            self.stats.add("preprocess", time.perf_counter() - start)
            self.feeds.put(_InFlight(visible, prepared))

    def _model(self) -> None:
        while (item := self._take(self.feeds, "model")) is not None:
            start = time.perf_counter()
            item.outputs = self.processor.infer(item.prepared)
            self.stats.add("model", time.perf_counter() - start)
            self.stats.processed += 1
            item.prepared.feed = {}    # the inputs are done with: free them while the frame waits
            self.results.put(item)

    def _postprocess(self) -> None:
        while (item := self._take(self.results, "postprocess")) is not None:
            start = time.perf_counter()
            labels, fused = self.processor.restore(item.outputs, item.prepared.fit)
            self.stats.add("postprocess", time.perf_counter() - start)
            self.restored.put(_Processed(item.visible, item.prepared.infrared8, labels, fused))

    def status_text(self, what: str) -> str:
        """``what`` (frame name on the composite, frame count on the console) plus rate and drops."""
        return f"{what} | {self.stats.fps():.1f} fps | model {self.stats.mean_ms('model'):.0f} ms | dropped {self.dropped}"

    def _output(self) -> None:
        while (item := self._take(self.restored, "output")) is not None:
            start = time.perf_counter()
            image = self.processor.render(item.visible.image, item.infrared8, item.labels, item.fused,
                                          self.status_text(item.visible.name))
            rendered = Rendered(item.visible.name, image, item.labels, item.fused, item.visible.stamp_ns)
            with self._sink_lock:
                if self._sinks_closed:      # aborted while rendering: the outputs are finalised already
                    return
                for sink in self.sinks:
                    sink.write(rendered)
                    if sink.wants_stop:
                        self.stop("display")
            self.stats.add("output", time.perf_counter() - start)
            self.stats.mark_written()

    def _spawn(self, name: str, body: Callable[[], None], inbox: FrameQueue | None,
               outbox: FrameQueue | None) -> threading.Thread:
        """Start one stage; however it ends, its output is closed (the stages after it drain it)
        and its input abandoned (the stage before it is released)."""
        def guarded() -> None:
            try:
                body()
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
                if self._error is None:
                    self._error = exc
                self._failed.add(STAGES.index(name))
                self.stop("error")
            finally:
                if outbox is not None:
                    outbox.close()
                if inbox is not None:
                    inbox.abandon()
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    # --- run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Process until the sources end, ``max_frames``, a signal or ``stop()``; returns the log."""
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.stats = RunStats(warmup=self.options.warmup_frames)   # timed from here, not construction
        restore = self._install_signal_handlers()
        show_status = bool(self.options.status_interval_s) and LOG.isEnabledFor(logging.INFO)
        threads = [self._spawn("capture", self._capture, None, self.frames),
                   self._spawn("preprocess", self._preprocess, self.frames, self.feeds),
                   self._spawn("model", self._model, self.feeds, self.results),
                   self._spawn("postprocess", self._postprocess, self.results, self.restored),
                   self._spawn("output", self._output, self.restored, None)]
        try:
            last_status = time.perf_counter()
            while threads[-1].is_alive():
                threads[-1].join(timeout=0.1)
                if show_status and time.perf_counter() - last_status >= self.options.status_interval_s:
                    self._print_status()
                    last_status = time.perf_counter()
        except BaseException:
            self._abort()       # a second signal: drop what is queued, keep the outputs whole
            raise
        finally:
            self.stop("interrupt" if threads[-1].is_alive() else self.stopped_by)
            try:
                for thread in threads:
                    thread.join(timeout=5.0)
            finally:                    # even when yet another signal cuts the wait short
                close_errors = self._close_sinks()
                restore()
            log = self._log(started_at)
            log_error = self._write_log(log)
            if show_status:
                self._print_status(final=True)
            self._say_skipped()
        if self._error is not None:
            raise self._error
        for error in [*close_errors, log_error]:
            if error is not None:
                raise error
        return log

    def _abort(self) -> None:
        """Stop every stage at its next frame; queued frames are dropped, not half-written."""
        self._aborted = True
        self.stop("interrupt")
        for queue in (self.frames, self.feeds, self.results, self.restored):
            queue.abandon()

    def _write_log(self, log: dict[str, Any]) -> SinkError | None:
        """Write the run log, except for a run that failed before its first frame (nothing to
        report but the error, which the user has read: no log, no output folder made for it)."""
        path = self.options.log_path
        if path is None or (self._error is not None and self.stats.captured == 0):
            return None
        try:
            write_json_atomic(path, log)
        except OSError as exc:
            return SinkError(f"{path}: cannot write the run log ({exc.strerror or type(exc).__name__})")
        return None

    def _say_skipped(self) -> None:
        """One line at the end naming the skipped frames (each was also logged as it was skipped)."""
        skipped, named = self.source.skipped, self.source.skipped_frames[:SKIPPED_NAMED_AT_END]
        if not skipped:
            return
        names = ", ".join(f"{bad.stream} {bad.name}" for bad in named)
        more = f" and {skipped - len(named)} more" if skipped > len(named) else ""
        where = f"; all in {self.options.log_path}" if self.options.log_path else ""
        LOG.warning(f"skipped {skipped} bad frame{'s' if skipped != 1 else ''}: {names}{more}{where}")

    def _close_sinks(self) -> list[BaseException]:
        """Finalise every sink, after the frame being written (if any) is complete."""
        errors: list[BaseException] = []
        with self._sink_lock:
            self._sinks_closed = True
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:  # noqa: BLE001 - finalise every other sink before reporting
                    errors.append(exc)
        return errors

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT/SIGTERM stop the run cleanly; a second Ctrl-C interrupts as usual."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        def handle(signum: int, _frame: object) -> None:
            restore()
            LOG.warning(f"{signal.Signals(signum).name}: stopping; finishing queued frames and closing outputs")
            self.stop("signal")

        for sig in previous:
            signal.signal(sig, handle)
        return restore

    def pairing_text(self) -> str:
        """The live pairing for the status line: skew, unpaired frames per camera, and a paused
        pairing's one line (``visible: no frame for 2.1 s; pairing paused, infrared continues``)."""
        if not self.source.live:
            return ""
        status = self.source.status()
        skew = f"skew p95 {status.skew_ms['p95']:.1f} ms" if status.skew_ms else "no pairs yet"
        unpaired = status.unpaired
        text = f" | {skew} | unpaired visible {unpaired['visible']} infrared {unpaired['infrared']}"
        return text + (f" | {status.message}" if status.message else "")

    def _print_status(self, final: bool = False) -> None:
        stages = " ".join(f"{s} {self.stats.mean_ms(s):.1f}" for s in STAGES)
        line = f"{self.status_text(f'frames {self.stats.written}')}{self.pairing_text()} | ms: {stages}"
        tty = sys.stderr.isatty()
        if not tty and line == self._last_status:
            return      # a log file gets a line when something changed, not one per interval
        self._last_status = line
        if final:
            print(("\r" if tty else "") + line, file=sys.stderr)
        else:
            print(("\r" + line + " " * 4) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    def _log(self, started_at: str) -> dict[str, Any]:
        elapsed = self.stats.elapsed_s
        contract = self.contract
        return {
            "started_at": started_at,
            "model": self.runner.name, "backend": self.runner.backend, "device": self.runner.device,
            "providers": getattr(self.runner, "providers", None),
            "contract": {"backbone": contract.backbone, "num_classes": contract.num_classes,
                         "input_size": [contract.height, contract.width], "uint8_io": contract.uint8_io,
                         "seg_output": contract.seg_output},
            "visible": redact(self.source.visible.uri), "infrared": redact(self.source.infrared.uri),
            "live": self.source.live, "outputs": [sink.uri for sink in self.sinks],
            "segments": {sink.uri: [str(path) for path in sink.segments] for sink in self.sinks
                         if isinstance(sink, SegmentedVideoSink)},
            "thermal": {"low_percentile": self.thermal.low_percentile, "high_percentile": self.thermal.high_percentile,
                        "smoothing": self.thermal.smoothing},
            "registration": self.registration_path if self.registration is not None else None,
            "frames": {"captured": self.stats.captured, "processed": self.stats.processed,
                       "written": self.stats.written, "dropped_before_model": self.frames.dropped,
                       "dropped_before_output": self.results.dropped, "unpaired": self.source.unpaired,
                       "skipped": self.source.skipped},
            "pairing": self.source.status().as_dict(),
            "on_bad_frame": self.source.on_bad_frame,
            "skipped_frames": [{"stream": bad.stream, "name": bad.name, "index": bad.index, "error": str(bad)}
                               for bad in self.source.skipped_frames],
            "reconnects": {"visible": self.source.visible.reconnects, "infrared": self.source.infrared.reconnects},
            "wall_s": round(elapsed, 3), "fps": round(self.stats.written / elapsed, 3) if elapsed > 0 else 0.0,
            "steady": {"after_frames": self.stats.warmup, "frames": self.stats.steady_frames,
                       "fps": round(self.stats.steady_fps(), 3)},
            "stages": self.stats.summary(),
            "stopped_by": "error" if self._error is not None else self.stopped_by,
            "error": str(self._error).splitlines()[0] if self._error is not None and str(self._error) else None,
        }
