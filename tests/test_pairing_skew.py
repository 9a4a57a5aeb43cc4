"""Pairing by capture time with a maximum skew: a 30 fps visible camera and a 9 fps thermal one.

Thermal cameras often run at 9 fps beside a 30 fps colour camera, neither with hardware sync,
and each stamps its frames with some jitter. The pairing must never pair two frames further
apart than the bound, never use a frame twice, count every frame left without a partner for its
own camera, and, when one camera stops delivering while the other goes on, pause with one clear
line and resume when the camera comes back.
"""
from __future__ import annotations

import logging
import re
import threading
import time

import numpy as np
import pytest
from test_runtime_pipeline import SlowRunner

from mrfs_edge.io.pairing import PairedSource, Pairer, SkewStats
from mrfs_edge.io.sinks import NullSink
from mrfs_edge.io.source import Frame, Source
from mrfs_edge.runtime import Pipeline, PipelineOptions

VIS_FPS, IR_FPS = 30.0, 9.0
JITTER_S = 0.003
VIS_LATENCY_S, IR_LATENCY_S = 0.005, 0.045      # capture → arrival (a USB thermal camera lags)


def stamps(fps: float, seconds: float, phase_s: float, seed: int) -> np.ndarray:
    count = int(seconds * fps)
    jitter = np.random.default_rng(seed).uniform(-JITTER_S, JITTER_S, count)
    return phase_s + np.arange(count) / fps + jitter


def frame(stream: str, index: int, stamp: float) -> Frame:
    return Frame(np.zeros((2, 2), np.uint8), float(stamp), index, f"{stream}_{index:06d}")


def replay(pairer: Pairer, vis: np.ndarray, ir: np.ndarray) -> list[tuple[Frame, Frame]]:
    """Both cameras' frames pushed in arrival order, pairs taken as soon as they can be."""
    arrivals = sorted([(t + VIS_LATENCY_S, "visible", k, t) for k, t in enumerate(vis)]
                      + [(t + IR_LATENCY_S, "infrared", j, t) for j, t in enumerate(ir)])
    pairs = []
    for now, stream, index, stamp in arrivals:
        pairer.push(stream, frame(stream, index, stamp), now)
        while (pair := pairer.pop()) is not None:
            pairs.append(pair)
    return pairs


@pytest.mark.parametrize("max_skew_s", [0.020, 0.008])
def test_30_and_9_fps_pair_within_the_bound_each_frame_once_and_the_rest_counted(max_skew_s):
    vis, ir = stamps(VIS_FPS, 10.0, 0.0, 1), stamps(IR_FPS, 10.0, 0.007, 2)
    pairer = Pairer(max_skew_s, stall_s=None)
    pairs = replay(pairer, vis, ir)

    skews = np.array([abs(v.timestamp_s - i.timestamp_s) for v, i in pairs])
    assert skews.max() <= max_skew_s
    used_vis, used_ir = [v.index for v, _ in pairs], [i.index for _, i in pairs]
    assert len(set(used_vis)) == len(used_vis) and len(set(used_ir)) == len(used_ir)
    # Each thermal frame pairs with its nearest visible frame when that one is within the bound.
    nearest = [int(np.argmin(np.abs(vis - t))) for t in ir]
    expected = [(nearest[j], j) for j, t in enumerate(ir) if abs(vis[nearest[j]] - t) <= max_skew_s]
    assert [(v.index, i.index) for v, i in pairs] == expected
    assert 0 < len(pairs) <= len(ir)
    if max_skew_s < 1 / VIS_FPS / 2:
        assert len(pairs) < len(ir)             # the tight bound leaves thermal frames without a partner
    # Every frame is paired, counted unpaired for its own camera, or still waiting for a partner.
    left = {stream: len(frames) for stream, frames in pairer.frames.items()}
    assert pairer.unpaired["visible"] == len(vis) - len(pairs) - left["visible"]
    assert pairer.unpaired["infrared"] == len(ir) - len(pairs) - left["infrared"]
    assert pairer.pairs == len(pairs)

    skew = pairer.status().skew_ms
    assert skew["max"] == pytest.approx(1000 * skews.max(), abs=0.01)
    for q in (50, 95, 99):
        exact = 1000 * np.percentile(skews, q, method="inverted_cdf")
        assert exact - 0.01 <= skew[f"p{q}"] <= exact + 0.11        # 0.1 ms bins, rounded to 0.01 ms


def test_skew_percentiles_need_constant_memory():
    stats = SkewStats(0.02)
    for value in np.random.default_rng(0).uniform(0, 0.02, 100_000):
        stats.add(float(value))
    assert stats.counts.size == 201 and stats.count == 100_000
    summary = stats.summary_ms()
    assert summary["p50"] == pytest.approx(10.0, abs=0.2) and summary["p99"] == pytest.approx(19.8, abs=0.2)


def test_a_dying_camera_pauses_the_pairing_with_one_line_and_it_resumes(caplog):
    caplog.set_level(logging.INFO, logger="mrfs_edge.io.pairing")
    pairer = Pairer(0.02, stall_s=1.0, started=0.0)
    vis, ir = stamps(VIS_FPS, 6.0, 0.0, 3), stamps(IR_FPS, 6.0, 0.007, 4)
    dead = (vis >= 2.0) & (vis < 4.1)               # visible delivers nothing from 2.0 s to 4.1 s
    arrivals = sorted([(t + VIS_LATENCY_S, "visible", k, t) for k, t in enumerate(vis) if not dead[k]]
                      + [(t + IR_LATENCY_S, "infrared", j, t) for j, t in enumerate(ir)])
    seen, pairs = [], []
    for now, stream, index, stamp in arrivals:
        pairer.push(stream, frame(stream, index, stamp), now)
        while (pair := pairer.pop()) is not None:
            pairs.append(pair)
        pairer.update(now)
        seen.append((now, pairer.status(now)))

    last_visible = max(t for t in vis[~dead] if t < 2.0) + VIS_LATENCY_S
    paused = [(now, status) for now, status in seen if status.paused]
    assert paused and all(status.stalled == ("visible",) for _, status in paused)
    assert paused[0][0] - last_visible == pytest.approx(1.0, abs=1 / IR_FPS + 0.01)  # noticed at the next frame
    _, longest = paused[-1]
    assert longest.message == f"visible: no frame for {longest.silent_s['visible']:.1f} s; pairing paused, infrared continues"
    assert longest.message.startswith("visible: no frame for 2.")
    assert not any(v.timestamp_s >= 2.0 and v.timestamp_s < 4.1 for v, _ in pairs)
    assert any(v.timestamp_s >= 4.1 for v, _ in pairs)                        # paired again after the return
    final = seen[-1][1]
    assert not final.paused and final.pauses == 1 and final.message is None
    # Thermal frames of the dead time found no partner; they are counted, and the pairs stay in bound.
    thermal_in_gap = sum(1 for t in ir if 2.0 + 0.02 < t < 4.1 - 0.02)
    assert final.unpaired["infrared"] >= thermal_in_gap
    assert all(abs(v.timestamp_s - i.timestamp_s) <= 0.02 for v, i in pairs)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("pairing paused" in line for line in lines) == 1                  # said once, not per frame
    assert any(re.fullmatch(r"visible: frames again after 2\.\d s; pairing resumed", line) for line in lines)


class JitteredCamera(Source):
    """A live camera at ``fps`` whose frames carry jittered capture times, silent during ``dead``."""

    live = True

    def __init__(self, role: str, fps: float, seed: int, dead: tuple[float, float] | None = None) -> None:
        super().__init__(f"fake://{role}", role, retries=0)
        self.fps, self.dead = fps, dead
        self.rng = np.random.default_rng(seed)
        self.start = 0.0
        self._stamp = 0.0

    def _open(self) -> None:
        self.start = time.monotonic()

    def _grab(self) -> np.ndarray | None:
        while True:
            stamp = self.start + self._index / self.fps + self.rng.uniform(-JITTER_S, JITTER_S)
            if self.dead is None or not self.dead[0] <= stamp - self.start < self.dead[1]:
                break
            self._index += 1                        # a frame the dead camera never sent
        if self._closing.wait(max(stamp - time.monotonic(), 0.0)):
            return None
        self._stamp = stamp
        return np.zeros((48, 64, 3) if self.role == "visible" else (48, 64), np.uint8)

    def _capture_time_s(self) -> float:
        return self._stamp                          # the sensor's capture time, as GStreamer's PTS gives


def test_pipeline_status_line_and_log_say_a_camera_died_and_came_back(capsys, caplog):
    caplog.set_level(logging.INFO)
    source = PairedSource(JitteredCamera("visible", VIS_FPS, 5, dead=(0.8, 1.8)), JitteredCamera("infrared", IR_FPS, 6),
                          tolerance_s=0.02, stall_s=0.3)
    pipeline = Pipeline(SlowRunner(0.0, 48, 64), source, [NullSink()], options=PipelineOptions(status_interval_s=0.1))
    polled = []

    def poll() -> None:                             # what another program (an RTSP test) reads while it runs
        while not done.is_set():
            polled.append(source.status())
            done.wait(0.05)

    done = threading.Event()
    poller = threading.Thread(target=poll)
    stopper = threading.Timer(2.6, pipeline.stop)
    poller.start()
    stopper.start()
    try:
        log = pipeline.run()
    finally:
        stopper.cancel()
        done.set()
        poller.join()

    assert any(status.paused and status.stalled == ("visible",) for status in polled)
    assert not polled[-1].paused and polled[-1].pauses == 1
    pairing = log["pairing"]
    assert pairing["pauses"] == 1 and not pairing["paused"] and pairing["pairs"] == log["frames"]["captured"]
    assert pairing["skew_ms"]["max"] <= 20.0 and pairing["max_skew_ms"] == 20.0
    assert pairing["unpaired"]["infrared"] >= 5     # 9 fps thermal over the 1 s visible gap
    assert log["frames"]["unpaired"] == sum(pairing["unpaired"].values())
    status_lines = capsys.readouterr().err.splitlines()
    assert any(re.search(r"visible: no frame for \d\.\d s; pairing paused, infrared continues", line)
               for line in status_lines)
    assert "pairing paused" not in status_lines[-1] and "skew p95" in status_lines[-1]
    ended = source.status()
    time.sleep(0.4)                 # longer than stall_s: cameras no longer read do not go "silent"
    assert source.status() == ended and not ended.paused
