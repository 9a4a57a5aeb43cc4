"""A soak: the pipeline for a long time on a replayed source, with its memory, files and threads sampled.

A vehicle runs the pipeline for hours; a buffer that keeps every frame, a capture reopened
without being released or a thread started per reconnect costs nothing in a one-minute test
and stops the car's computer after a day. :func:`run_soak` runs a
:class:`~mrfs_edge.runtime.pipeline.Pipeline` for ``duration_s`` and samples, once per
``interval_s``, the process's resident memory (``VmRSS`` from ``/proc/self/status``, psutil
where there is no ``/proc``), its open file descriptors (``/proc/self/fd``) and its threads
(Python's and the kernel's: ONNX Runtime and OpenCV start threads Python does not see).

Start-up is not growth: sessions, arenas and queues fill during the first minutes, so growth is
measured from the end of ``warmup_s`` to the end (and as a least-squares slope in MB per hour
over the same span). :func:`growth_problems` turns that into verdicts a test asserts and the
command prints.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrfs_edge.core.files import atomic_path
from mrfs_edge.core.memory import resident_bytes
from mrfs_edge.runtime.pipeline import Pipeline

LOG = logging.getLogger(__name__)

PROGRESS_EVERY_S = 60.0       # a soak says where it is this often (an hour of per-second lines is noise)


def rss_mb() -> float | None:
    """Resident memory of this process in MiB (``None`` where it cannot be read)."""
    resident = resident_bytes()
    return None if resident is None else resident / 2**20


def _count(folder: str) -> int | None:
    try:
        return len(os.listdir(folder))
    except OSError:
        return None


def open_fds() -> int | None:
    """Open file descriptors (the listing's own descriptor included: a constant one)."""
    return _count("/proc/self/fd")


def os_threads() -> int | None:
    """Kernel threads of this process, the ones Python does not start included."""
    return _count("/proc/self/task")


@dataclass
class ResourceSample:
    t_s: float                 # since the soak started
    rss_mb: float | None
    fds: int | None
    threads: int               # Python threads (threading.active_count)
    tasks: int | None          # kernel threads (/proc/self/task)
    captured: int              # pairs captured so far
    written: int               # frames written by the sinks so far
    dropped: int               # frames the pipeline dropped to keep up so far


@dataclass
class GrowthLimits:
    """What a soak may grow after its warm-up and still pass."""

    rss_mb: float = 50.0
    fds: int = 4               # a file being read at the moment of a sample shows as one more
    threads: int = 0


def sample(pipeline: Pipeline, started: float) -> ResourceSample:
    return ResourceSample(round(time.monotonic() - started, 3), rss_mb(), open_fds(), threading.active_count(),
                          os_threads(), pipeline.stats.captured, pipeline.stats.written, pipeline.dropped)


class _Sampler(threading.Thread):
    """Samples once per interval and stops the pipeline when the soak's time is up."""

    def __init__(self, pipeline: Pipeline, duration_s: float, interval_s: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pipeline, self.duration_s, self.interval_s = pipeline, duration_s, interval_s
        self.samples: list[ResourceSample] = []
        self.done = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        next_at, progress_at = self.started, self.started + PROGRESS_EVERY_S
        while not self.done.is_set():
            self.samples.append(sample(self.pipeline, self.started))
            now = time.monotonic()
            if now - self.started >= self.duration_s:
                self.pipeline.stop("duration")
                return
            if now >= progress_at:
                last = self.samples[-1]
                LOG.info(f"soak {last.t_s / 60:.1f}/{self.duration_s / 60:.1f} min: RSS {last.rss_mb or 0:.0f} MiB, "
                         f"{last.fds} fds, {last.threads} threads ({last.tasks} tasks), {last.written} frames, "
                         f"{last.dropped} dropped")
                progress_at += PROGRESS_EVERY_S
            next_at += self.interval_s
            self.done.wait(max(next_at - time.monotonic(), 0.0))


def _span(values: list[float]) -> dict[str, float]:
    return {"at_warmup": values[0], "end": values[-1], "min": min(values), "max": max(values),
            "growth": values[-1] - values[0]}


def summarize(samples: list[ResourceSample], warmup_s: float) -> dict[str, Any]:
    """Growth from the first sample at or after ``warmup_s`` to the last one, per resource."""
    after = [s for s in samples if s.t_s >= warmup_s]
    if len(after) < 2:
        raise ValueError(f"{len(after)} samples after a {warmup_s:g} s warm-up: the soak ended too early to "
                         "measure growth (run longer or shorten --warmup-s)")
    summary: dict[str, Any] = {"warmup_s": warmup_s, "samples_after_warmup": len(after),
                               "span_s": round(after[-1].t_s - after[0].t_s, 3)}
    for name in ("rss_mb", "fds", "threads", "tasks"):
        values = [getattr(s, name) for s in after]
        if any(v is None for v in values):
            summary[name] = None
            continue
        summary[name] = {k: round(v, 3) for k, v in _span(values).items()}
    if summary["rss_mb"] is not None:
        hours = np.array([s.t_s for s in after]) / 3600.0
        slope = np.polyfit(hours, np.array([s.rss_mb for s in after]), 1)[0]
        summary["rss_mb"]["slope_mb_per_h"] = round(float(slope), 3)
    return summary


def growth_problems(summary: dict[str, Any], limits: GrowthLimits) -> list[str]:
    """One line per resource that grew past its limit after the warm-up (empty: bounded)."""
    problems = []
    rss = summary.get("rss_mb")
    if rss is not None and rss["growth"] > limits.rss_mb:
        problems.append(f"resident memory grew {rss['growth']:.1f} MiB after the warm-up "
                        f"({rss['at_warmup']:.0f} → {rss['end']:.0f} MiB, {rss['slope_mb_per_h']:.1f} MiB/h; "
                        f"limit {limits.rss_mb:g})")
    for name, what, limit in (("fds", "open file descriptors", limits.fds), ("threads", "Python threads", limits.threads),
                              ("tasks", "kernel threads", limits.threads)):
        span = summary.get(name)
        if span is not None and span["max"] - span["at_warmup"] > limit:
            problems.append(f"{what} grew from {span['at_warmup']:.0f} to {span['max']:.0f} after the warm-up "
                            f"(limit +{limit})")
    return problems


def run_soak(pipeline: Pipeline, duration_s: float, warmup_s: float, interval_s: float = 1.0,
             limits: GrowthLimits | None = None) -> dict[str, Any]:
    """Run ``pipeline`` for ``duration_s`` (or until its source ends or a signal), sampling as it goes.

    Call it from the main thread, as :meth:`Pipeline.run`, so Ctrl-C and SIGTERM stop the soak
    cleanly (its report then covers the time it ran).
    """
    if not 0 <= warmup_s < duration_s or interval_s <= 0:
        raise ValueError(f"need 0 <= warm-up ({warmup_s}) < duration ({duration_s}) and interval ({interval_s}) > 0")
    limits = limits or GrowthLimits()
    sampler = _Sampler(pipeline, duration_s, interval_s)
    sampler.start()
    try:
        log = pipeline.run()
    finally:
        sampler.done.set()
        sampler.join()
    samples = sampler.samples       # taken while it ran: after it, its threads are gone
    summary = summarize(samples, warmup_s)
    frames = log["frames"]
    return {"duration_s": duration_s, "interval_s": interval_s, "limits": asdict(limits),
            "frames": {"pairs": frames["captured"], "processed": frames["processed"], "written": frames["written"],
                       "dropped": frames["dropped_before_model"] + frames["dropped_before_output"],
                       "unpaired": frames["unpaired"], "skipped": frames["skipped"]},
            "summary": summary, "problems": growth_problems(summary, limits), "run_log": log,
            "samples": [asdict(s) for s in samples]}


def write_plot(report: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Memory, descriptors, threads and frames over time as a PNG; ``None`` without matplotlib (a Jetson)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        LOG.info("matplotlib is not installed: no soak plot (pip install matplotlib, or the export extra)")
        return None
    samples = report["samples"]
    minutes = np.array([s["t_s"] for s in samples]) / 60.0
    warmup = report["summary"]["warmup_s"] / 60.0
    panels = [("resident memory (MiB)", ["rss_mb"]), ("open file descriptors", ["fds"]),
              ("threads", ["threads", "tasks"]), ("frames", ["written", "dropped"])]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for axis, (title, keys) in zip(axes.ravel(), panels):
        for key in keys:
            values = [s[key] if s[key] is not None else np.nan for s in samples]
            axis.plot(minutes, values, label=key, linewidth=1.2)
        axis.axvline(warmup, color="grey", linestyle="--", linewidth=0.8, label="end of warm-up")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in axes[1]:
        axis.set_xlabel("minutes")
    run = report["run_log"]
    figure.suptitle(f"soak: {run['model']} ({run['backend']}), {report['duration_s'] / 60:.0f} min; "
                    f"{'bounded' if not report['problems'] else 'GROWTH: ' + '; '.join(report['problems'])}",
                    fontsize=10)
    figure.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    return target
