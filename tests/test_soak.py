"""The soak's leak check: a short soak of the real pipeline on the bundled pairs replayed as cameras.

A leak test, not a timing test: it asserts that memory, file descriptors and threads stay
bounded after the warm-up for a clean pipeline, and that the same check reports each of the
three when a sink leaks them (so the check can fail). The model is a contract-following fake at
a small input size: the soak measures the pipeline around the model, and an hour-long soak of
the real model is ``benchmarks/soak.py``.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from test_runtime_pipeline import SlowRunner

from mrfs_edge.assets import SAMPLES
from mrfs_edge.io.pairing import open_pair
from mrfs_edge.io.sinks import NullSink, Rendered, Sink
from mrfs_edge.runtime import Pipeline, PipelineOptions
from mrfs_edge.runtime.looping import loop_pair
from mrfs_edge.runtime.soak import GrowthLimits, ResourceSample, growth_problems, run_soak, summarize, write_plot
from mrfs_edge.tools.run import soak_main

LIMITS = GrowthLimits(rss_mb=25.0, fds=4, threads=0)
LEAK_BYTES = 8 * 2**20


class LeakySink(Sink):
    """Per frame: keeps 8 MiB, opens two files and parks a thread; the three leaks a soak must catch.

    Sized so that a handful of frames after the warm-up (a loaded CI machine) exceeds every limit.
    """

    def __init__(self) -> None:
        self.uri = "leaky://"
        self.kept: list[np.ndarray] = []
        self.files: list = []
        self.release = threading.Event()

    def write(self, frame: Rendered) -> None:
        self.kept.append(np.ones(LEAK_BYTES, np.uint8))        # ones, not empty: the pages are resident
        self.files += [open(os.devnull, "rb"), open(os.devnull, "rb")]  # noqa: SIM115 - the leak under test
        threading.Thread(target=self.release.wait, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        for file in self.files:
            file.close()


def short_soak(sink: Sink) -> dict:
    source = loop_pair(open_pair(str(SAMPLES / "vi"), str(SAMPLES / "ir")), fps=20.0)
    pipeline = Pipeline(SlowRunner(0.005, 48, 64), source, [sink], options=PipelineOptions(status_interval_s=0))
    return run_soak(pipeline, duration_s=4.0, warmup_s=1.5, interval_s=0.1, limits=LIMITS)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="samples descriptors and threads from /proc")
def test_clean_pipeline_stays_bounded_after_warmup_and_leaks_are_each_reported(tmp_path):
    clean = short_soak(NullSink())
    assert clean["problems"] == [], clean["summary"]
    assert clean["run_log"]["stopped_by"] == "duration"
    frames = clean["frames"]
    assert frames["pairs"] > 0 and frames["written"] > 0
    assert frames["pairs"] == frames["written"] + frames["dropped"]
    summary = clean["summary"]
    assert summary["samples_after_warmup"] >= 2 and summary["threads"]["max"] == summary["threads"]["at_warmup"]
    samples = clean["samples"]
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    assert samples[-1]["written"] >= samples[0]["written"]

    leaky = LeakySink()
    report = short_soak(leaky)
    problems = " | ".join(report["problems"])
    assert report["summary"]["fds"]["max"] - report["summary"]["fds"]["at_warmup"] > LIMITS.fds
    for what in ("resident memory", "open file descriptors", "Python threads", "kernel threads"):
        assert what in problems, problems

    path = write_plot(report, tmp_path / "soak.png")
    if path is not None:                              # matplotlib (the export extra) is installed
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not [p for p in tmp_path.iterdir() if p.name != "soak.png"]     # nothing half-written left


def sample_at(t_s: float, rss: float, fds: int = 10, threads: int = 5) -> ResourceSample:
    return ResourceSample(t_s, rss, fds, threads, threads + 4, 0, 0, 0)


def test_growth_is_measured_after_warmup_with_a_slope_per_hour():
    # 1 MiB/s of growth after a start-up jump that the warm-up must leave out.
    samples = [sample_at(t, 100.0 + (400.0 if t < 10 else 0.0) + t) for t in range(40)]
    summary = summarize(samples, warmup_s=10.0)
    rss = summary["rss_mb"]
    assert rss["at_warmup"] == 110.0 and rss["end"] == 139.0 and rss["growth"] == 29.0
    assert rss["slope_mb_per_h"] == pytest.approx(3600.0)
    assert growth_problems(summary, GrowthLimits(rss_mb=30.0)) == []
    (problem,) = growth_problems(summary, GrowthLimits(rss_mb=20.0))
    assert problem.startswith("resident memory grew 29.0 MiB")
    with pytest.raises(ValueError, match="ended too early"):
        summarize(samples[:5], warmup_s=10.0)


def test_one_extra_descriptor_is_within_limits_a_growing_count_is_not():
    samples = [sample_at(t, 100.0, fds=10 + (t % 2)) for t in range(20)]
    assert growth_problems(summarize(samples, 5.0), GrowthLimits()) == []
    samples = [sample_at(t, 100.0, fds=10 + t) for t in range(20)]
    (problem,) = growth_problems(summarize(samples, 5.0), GrowthLimits())
    assert problem == "open file descriptors grew from 15 to 29 after the warm-up (limit +4)"


def test_soak_command_refuses_a_warmup_longer_than_the_soak(tmp_path, capsys):
    assert soak_main(["--duration-s", "10", "--warmup-s", "10", "--output-dir", str(tmp_path / "soak")]) == 2
    assert "--warmup-s 10 must be shorter than --duration-s 10" in capsys.readouterr().err
    assert not (tmp_path / "soak").exists()
