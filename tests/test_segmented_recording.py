"""Recording that survives a power cut: the runtime command is SIGKILLed mid-recording.

A video is playable only once its writer has closed it, so one long file is lost whole when the
power goes. With ``--segment-s`` the runtime records closed segments, each written under a
hidden temporary name and renamed when complete: after a ``kill -9`` every file with a final
name must decode to the last frame, and only the open segment may be lost.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mrfs_edge.assets import SAMPLES
from mrfs_edge.io.sinks import Rendered, SegmentedVideoSink, open_sink

REPO = Path(__file__).resolve().parents[1]
FINAL = re.compile(r"drive_\d{6}\.mkv")
FINAL_AVI = re.compile(r"drive_\d{6}\.avi")


def decoded_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert frames, f"{path.name}: no frame decodes"
    assert declared <= 0 or declared == len(frames), f"{path.name}: {declared} frames declared, {len(frames)} decode"
    return frames


def test_sigkill_mid_recording_leaves_only_complete_segments_under_final_names(tmp_path, tiny_onnx):
    model = tiny_onnx
    out = tmp_path / "rec"
    command = [sys.executable, str(REPO / "runtime" / "run.py"), "--model", str(model), "--threads", "1",
               "--visible", str(SAMPLES / "vi"), "--infrared", str(SAMPLES / "ir"), "--loop", "--no-display",
               "--output", f"{out / 'drive.mkv'}?codec=MJPG", "--segment-s", "1", "-q"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            names = [p.name for p in out.iterdir()] if out.is_dir() else []
            closed = [n for n in names if FINAL.fullmatch(n)]
            if len(closed) >= 2 and any(n.startswith(".") for n in names):    # two closed, one being written
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[0].decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    files = sorted(out.iterdir())
    closed = [p for p in files if FINAL.fullmatch(p.name)]
    assert len(closed) >= 2, [p.name for p in files]
    for path in closed:
        frames = decoded_frames(path)
        assert all(frame.shape == frames[0].shape and frame.ndim == 3 for frame in frames)
    # Anything else is the segment open at the kill, under its hidden temporary name, never a final one.
    others = [p.name for p in files if p not in closed]
    assert others and all(re.fullmatch(r"\.drive_\d{6}\.partial\.mkv", name) for name in others), others
    numbers = sorted(int(p.stem.rsplit("_", 1)[1]) for p in closed)
    assert numbers == list(range(len(numbers)))       # in order, none missing before the lost one
    assert not (out / "drive.runtime_log.json").exists()      # killed: no log claims a finished run


def rendered(value: int) -> Rendered:
    image = np.full((32, 48, 3), value, np.uint8)
    return Rendered(f"f{value}", image, np.zeros((32, 48), np.uint8), image)


def test_segments_are_cut_by_time_renamed_when_closed_and_numbered_after_earlier_ones(tmp_path):
    now = [0.0]
    sink = SegmentedVideoSink(tmp_path / "drive.avi", 10.0, 2.0, clock=lambda: now[0])
    for k in range(7):                      # a frame every 0.7 s: segments of 3, 3 and 1 frames
        sink.write(rendered(10 * k))
        now[0] += 0.7
    assert [p.name for p in sink.segments] == ["drive_000000.avi", "drive_000001.avi"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".drive_000002.partial.avi", "drive_000000.avi",
                                                          "drive_000001.avi"]
    sink.close()
    assert [len(decoded_frames(p)) for p in sink.segments] == [3, 3, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive_000000.avi", "drive_000001.avi", "drive_000002.avi"]

    again = open_sink(str(tmp_path / "drive.avi"), fps=10.0, segment_s=2.0)   # a restarted recorder
    assert isinstance(again, SegmentedVideoSink)
    again.write(rendered(200))
    again.close()
    assert [p.name for p in again.segments] == ["drive_000003.avi"]
    assert len(decoded_frames(tmp_path / "drive_000000.avi")) == 3        # the earlier drive is untouched
    with pytest.raises(ValueError, match="segment_s must be positive"):
        SegmentedVideoSink(tmp_path / "x.avi", 10.0, 0.0)


def test_segment_option_needs_a_video_output(tmp_path, capsys):
    from mrfs_edge.tools.run import run_main

    assert run_main(["--output", str(tmp_path / "frames"), "--segment-s", "5", "--no-display"]) == 2
    assert "--segment-s 5 is for video outputs" in capsys.readouterr().err
    assert not (tmp_path / "frames").exists()
    assert os.listdir(tmp_path) == []


def test_a_run_that_ends_closes_its_last_segment_and_logs_every_segment(tmp_path, tiny_onnx):
    from mrfs_edge.tools.run import run_main

    assert run_main(["--model", str(tiny_onnx), "--threads", "1", "--visible", str(SAMPLES / "vi"),
                     "--infrared", str(SAMPLES / "ir"), "--loop", "--max-frames", "30", "--no-display", "-q",
                     "--output", str(tmp_path / "drive.avi"), "--segment-s", "0.5"]) == 0
    log = json.loads((tmp_path / "drive.runtime_log.json").read_text())
    segments = [Path(p) for p in log["segments"][str(tmp_path / "drive.avi")]]
    assert segments and all(FINAL_AVI.fullmatch(p.name) for p in segments)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in segments] + ["drive.runtime_log.json"])
    assert sum(len(decoded_frames(p)) for p in segments) == log["frames"]["written"] == 30
