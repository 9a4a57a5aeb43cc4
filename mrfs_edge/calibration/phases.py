"""Wall time and peak resident memory of each phase of a calibration.

The process's peak (``ru_maxrss``) only grows, so it names a phase's own peak only when that
phase set a new one; a phase that stays below an earlier peak is measured by sampling the
resident size in a background thread. Nothing is reset, so ``/usr/bin/time -v`` around a
command still reports the command's true peak.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mrfs_edge.core.memory import peak_rss_bytes, resident_bytes

LOG = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.02


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.peak = resident_bytes() or 0   # 0 without /proc or psutil: the peak alone is used
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, resident_bytes() or 0)

    def finish(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, resident_bytes() or 0)


class PhaseLog:
    """``with phases("ranges"): ...`` records the phase's wall and CPU seconds and peak RSS, and logs them.

    CPU seconds (every thread of the process) say what a phase costs on a machine shared with
    other work, where wall time says mostly how busy the machine was.
    """

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self._started, self._cpu_started = time.perf_counter(), time.process_time()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        before = peak_rss_bytes()
        sampler = _Sampler()
        sampler.start()
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            sampled = sampler.finish()
            after = peak_rss_bytes()
            peak = after if after > before else sampled or after
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            self.phases[name] = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                                 "peak_rss_mb": round(peak / 2 ** 20)}
            LOG.info(f"{name}: {seconds:.1f} s ({cpu:.1f} s CPU), peak memory {peak / 2 ** 30:.2f} GB")

    def summary(self) -> dict[str, Any]:
        """Per phase, the total seconds and the process's peak so far."""
        return {"phases": self.phases, "seconds": round(time.perf_counter() - self._started, 1),
                "cpu_seconds": round(time.process_time() - self._cpu_started, 1),
                "peak_rss_mb": round(peak_rss_bytes() / 2 ** 20)}
