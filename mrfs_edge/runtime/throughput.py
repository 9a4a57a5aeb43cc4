"""End-to-end FPS of the runtime pipeline against the model's own FPS, on the same frames.

The pipeline is worth its threads only if it runs at the rate of the model alone: capture,
gain control, fitting, argmax, drawing and writing must hide behind inference instead of adding
to it. :func:`measure_throughput` measures both on one runner and one source:

* model-only: ``runner.infer`` back to back on feeds prepared beforehand from the source's
  first frames (what ``benchmark`` tools report as the model's FPS);
* end-to-end: the threaded :class:`~mrfs_edge.runtime.pipeline.Pipeline` (capture → preprocess →
  model → postprocess → composite) over the source, timed by the pipeline's own statistics
  after the warm-up frames.

The model-only frames are timed in two halves, one before and one after the pipeline run, so a
machine whose load drifts (a training job beside it) biases neither figure.
"""
from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import numpy as np

from mrfs_edge.backends.base import Runner
from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.pairing import PairedSource
from mrfs_edge.io.source import Frame
from mrfs_edge.io.uri import redact
from mrfs_edge.runtime.pipeline import STAGES, Pipeline, PipelineOptions

# Distinct frames prepared for the model-only loop: inference time does not depend on the
# pixels, and each 480×640 float feed holds ~5 MB, so a long video is not held in memory.
MAX_FEEDS = 8


@dataclass
class ThroughputResult:
    """Both rates and where the pipeline's time goes (per-stage median wall time, ms)."""

    model: str
    backend: str
    device: str
    threads: int | None            # ONNX Runtime intra-op threads (0: its default); None for other backends
    frames: int                    # pipeline frames timed after the warm-up (model-only times as many)
    warmup: int
    model_only_fps: float
    end_to_end_fps: float
    ratio: float                   # end_to_end_fps / model_only_fps
    stage_ms: dict[str, float]
    dropped: int                   # live sources only: frames the pipeline skipped to keep up

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A few aligned lines for the console."""
        rows = [("model-only", f"{self.model_only_fps:.2f} fps", f"{1000.0 / self.model_only_fps:.1f} ms/frame"),
                ("end-to-end", f"{self.end_to_end_fps:.2f} fps", f"ratio {self.ratio:.3f} to model-only")]
        rows += [(f"  {stage}", f"{ms:.1f} ms", "median per frame") for stage, ms in self.stage_ms.items()]
        width = max(len(r[0]) for r in rows)
        threads = "default" if self.threads == 0 else self.threads
        head = (f"{self.model} ({self.backend}, {self.device}, threads {threads}): "
                f"{self.frames} frames after {self.warmup} warm-up")
        return "\n".join([head] + [f"{a:<{width}}  {b:>12}  {c}" for a, b, c in rows])


class RepeatedPairs(PairedSource):
    """A file pair source replayed from the start until ``count`` pairs have come out.

    A throughput figure needs more frames than a sample folder holds; replaying re-reads and
    re-decodes every frame, so capture costs what it costs on a long recording.
    """

    def __init__(self, source: PairedSource, count: int) -> None:
        super().__init__(source.visible, source.infrared, source.tolerance_s, source.buffer)
        self.count = count

    def __iter__(self) -> Generator[tuple[Frame, Frame], None, None]:
        produced = 0
        while produced < self.count:
            before = produced
            with closing(super().__iter__()) as pairs:
                for pair in islice(pairs, self.count - produced):
                    produced += 1
                    yield pair
            if produced == before:       # an empty source would loop for ever
                return


def _prepared_feeds(pipeline: Pipeline, count: int) -> list[dict[str, np.ndarray]]:
    """Model feeds of the source's first ``count`` pairs, through the pipeline's own preprocessing."""
    with closing(pipeline.source.__iter__()) as pairs:     # a generator: closing releases the sources
        feeds = [pipeline.prepare(visible, infrared).feed for visible, infrared in islice(pairs, count)]
    pipeline.thermal.reset()            # the timed run starts with fresh gain-control limits
    if not feeds:
        raise SourceError(f"{redact(pipeline.source.visible.uri)}: no frame pairs to measure")
    return feeds


def _infer_seconds(runner: Runner, feeds: list[dict[str, np.ndarray]], count: int, offset: int = 0) -> float:
    start = time.perf_counter()
    for k in range(count):
        runner.infer(feeds[(offset + k) % len(feeds)])
    return time.perf_counter() - start


def measure_throughput(runner: Runner, source: PairedSource, frames: int, warmup: int) -> ThroughputResult:
    """Model-only and end-to-end FPS of ``runner`` over ``source`` (``frames`` timed after ``warmup``).

    A file source is replayed as often as needed; a live one is read as it comes (and may drop
    frames if the cameras outpace the model, which the result reports).
    """
    if frames < 1 or warmup < 0:
        raise ValueError(f"need frames >= 1 and warmup >= 0, got {frames} and {warmup}")
    total = warmup + frames
    replayed = source if source.live else RepeatedPairs(source, total)
    options = PipelineOptions(max_frames=total, status_interval_s=0, warmup_frames=warmup)
    pipeline = Pipeline(runner, replayed, [], options=options)
    runner.activate()
    feeds = _prepared_feeds(pipeline, min(total, MAX_FEEDS))
    _infer_seconds(runner, feeds, warmup)
    first = frames // 2
    model_seconds = _infer_seconds(runner, feeds, first)
    log = pipeline.run()
    model_seconds += _infer_seconds(runner, feeds, frames - first, offset=first)

    model_only_fps = frames / model_seconds
    end_to_end_fps = pipeline.stats.steady_fps()
    stages: Mapping[str, Mapping[str, float]] = log["stages"]
    return ThroughputResult(
        model=runner.name, backend=runner.backend, device=runner.device, threads=getattr(runner, "threads", None),
        frames=pipeline.stats.steady_frames, warmup=warmup, model_only_fps=model_only_fps,
        end_to_end_fps=end_to_end_fps, ratio=end_to_end_fps / model_only_fps,
        stage_ms={stage: float(stages[stage]["p50_ms"]) for stage in STAGES if stage in stages},
        dropped=log["frames"]["dropped_before_model"] + log["frames"]["dropped_before_output"])
