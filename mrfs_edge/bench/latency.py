"""Latency of one runner: model-only times, end-to-end times through the runtime's pre/post steps, memory.

Each timed run is one frame (or one batch of frames) taken the way the runtime pipeline takes
it, through the model I/O adapter (:class:`~mrfs_edge.processing.adapter.ModelAdapter`):
``feed`` (pre), ``runner.infer`` (model) and ``restore`` (post), one after the other on this thread.
The model-only time is the runner's own ``last_inference_time``; the end-to-end time is the
sum of the three, i.e. the latency of a frame through an idle pipeline (the threaded pipeline
overlaps the stages, so its throughput is higher: see :mod:`mrfs_edge.runtime.throughput`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable, Sequence

import numpy as np

from mrfs_edge.backends.base import Runner
from mrfs_edge.io.pairs import Pair
from mrfs_edge.processing.adapter import ModelAdapter

PERCENTILES = (50, 90, 99)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Mean and p50/p90/p99 in milliseconds (linear interpolation between runs)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"mean_ms": float(ms.mean()), **{f"p{q}_ms": float(np.percentile(ms, q)) for q in PERCENTILES}}


def run_once(runner: Runner, adapter: ModelAdapter, pairs: Sequence[Pair]) -> tuple[float, float, float]:
    """``(pre, model, post)`` seconds for one batch of ``pairs`` through the pipeline's steps."""
    start = time.perf_counter()
    feed, fits = adapter.feed([(pair.visible, pair.infrared) for pair in pairs])
    prepared = time.perf_counter()
    outputs = runner.infer(feed)
    inferred = time.perf_counter()
    adapter.restore(outputs, fits)
    finished = time.perf_counter()
    assert runner.last_inference_time is not None
    return prepared - start, runner.last_inference_time, finished - inferred


def measure_latency(runner: Runner, pairs: Sequence[Pair], batch: int, runs: int, warmup: int,
                    tick: Callable[[], None] = lambda: None) -> dict[str, float | int]:
    """Warm up, then time ``runs`` batches of ``batch`` frames cycling over ``pairs``.

    Returns model-only ``mean_ms``/``p50_ms``/``p90_ms``/``p99_ms`` and ``throughput_fps``
    (frames per second of the model alone), the same figures for the end-to-end time
    (``end_to_end_*``) and the mean pre/post times per batch. ``tick`` is called once per run.
    """
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0 and batch >= 1 (got {runs}, {warmup}, {batch})")
    runner.activate()
    adapter = ModelAdapter(runner.contract)
    pre, model, post = [], [], []
    for k in range(warmup + runs):
        chosen = [pairs[(k * batch + i) % len(pairs)] for i in range(batch)]
        times = run_once(runner, adapter, chosen)
        tick()
        if k >= warmup:
            for store, value in zip((pre, model, post), times):
                store.append(value)
    end_to_end = [a + b + c for a, b, c in zip(pre, model, post)]
    model_ms, e2e_ms = summary_ms(model), summary_ms(end_to_end)
    return {"batch": batch, "runs": runs, "warmup": warmup, **model_ms,
            "throughput_fps": 1000.0 * batch / model_ms["mean_ms"],
            **{f"end_to_end_{k}": v for k, v in e2e_ms.items()},
            "end_to_end_fps": 1000.0 * batch / e2e_ms["mean_ms"],
            "preprocess_ms": 1000.0 * float(np.mean(pre)), "postprocess_ms": 1000.0 * float(np.mean(post))}


class PeakMemory:
    """Peak host memory growth over a block, from Linux's resettable resident high-water mark.

    ``reset()`` returns freed heap pages to the OS (``malloc_trim``), then resets ``VmHWM`` to the
    current RSS through ``/proc/self/clear_refs``; ``peak_mb()`` is ``VmHWM`` minus the RSS at the
    reset: the resident memory the block added at its worst moment (weights, runtime arenas,
    activations). Libraries loaded earlier in the process are not counted, so this is a mode's
    cost on top of a running process, not the size of a fresh one. ``available`` is False off Linux.
    """

    STATUS = "/proc/self/status"
    CLEAR_REFS = "/proc/self/clear_refs"

    def __init__(self) -> None:
        self.baseline_kb: int | None = None
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name) if libc_name else None
        try:
            self._field("VmHWM")
            with open(self.CLEAR_REFS, "w"):
                pass
            self.available = True
            self.reason = ""
        except OSError as exc:
            self.available = False
            self.reason = f"peak RSS needs Linux /proc/self/status and clear_refs ({exc.strerror or exc})"

    def _field(self, name: str) -> int:
        with open(self.STATUS) as status:
            for line in status:
                if line.startswith(f"{name}:"):
                    return int(line.split()[1])
        raise OSError(f"no {name} in {self.STATUS}")

    def reset(self) -> None:
        if not self.available:
            return
        gc.collect()
        if self._libc is not None and hasattr(self._libc, "malloc_trim"):
            self._libc.malloc_trim(0)
        with open(self.CLEAR_REFS, "w") as clear:
            clear.write("5")
        self.baseline_kb = self._field("VmRSS")

    def peak_mb(self) -> float | None:
        if not self.available or self.baseline_kb is None:
            return None
        return max(self._field("VmHWM") - self.baseline_kb, 0) / 1024.0


def device_memory_in_use() -> int | None:
    """Bytes in use on the current CUDA device (all processes), or None without a CUDA-enabled torch."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return int(total - free)
