"""Sinks through the shared URI parser: the null sink (alone and as the runtime's --output), codec option."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_runtime_pipeline import standin_onnx

from mrfs_edge.assets import SAMPLES
from mrfs_edge.core.errors import SinkError
from mrfs_edge.io.sinks import (
    ImageFolderSink,
    NullSink,
    Rendered,
    VideoFileSink,
    open_sink,
    open_sinks,
)
from mrfs_edge.tools.run import run_main


def rendered(name: str) -> Rendered:
    return Rendered(name, np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.uint8), np.zeros((4, 6, 3), np.uint8))


def test_null_sink_counts_frames_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sink = open_sink("null://")
    assert isinstance(sink, NullSink) and sink.uri == "null://"
    for index in range(5):
        sink.write(rendered(f"f{index}"))
    sink.close()
    assert sink.frames == 5 and not sink.wants_stop
    assert list(tmp_path.iterdir()) == []


def test_runtime_output_null_runs_every_frame_and_writes_only_the_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = standin_onnx(tmp_path / "standin.onnx")
    log_path = tmp_path / "log.json"
    assert run_main(["--model", str(model), "--visible", str(SAMPLES / "vi"), "--infrared", str(SAMPLES / "ir"),
                     "--output", "null://", "--max-frames", "3", "--threads", "1", "--log", str(log_path)]) == 0
    log = json.loads(log_path.read_text())
    assert log["frames"]["written"] == 3 and log["outputs"] == ["null://"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.json", "standin.onnx"]   # no runs/ folder


def test_video_codec_option_and_where_it_does_not_apply(tmp_path):
    video = open_sink(f"{tmp_path / 'out.avi'}?codec=XVID")
    assert isinstance(video, VideoFileSink) and video.codecs == ("XVID",) and video.path == tmp_path / "out.avi"
    assert isinstance(open_sink(str(tmp_path / "out.avi")), VideoFileSink)
    assert open_sink(str(tmp_path / "out.avi")).codecs == ("MJPG", "XVID")
    with pytest.raises(SinkError) as exc:
        open_sink(f"{tmp_path / 'frames'}?codec=MJPG")
    assert str(exc.value) == (f"{tmp_path / 'frames'}?codec=MJPG: option codec is for video files "
                              "(.mp4, .avi, .mkv, ...), not an image folder")


def test_open_sinks_keeps_order_and_rejects_a_source_uri(tmp_path):
    sinks = open_sinks(["null://", f"file://{tmp_path / 'frames'}"])
    assert [type(s) for s in sinks] == [NullSink, ImageFolderSink]
    with pytest.raises(SinkError, match=r"^/dev/video0: 'v4l2://' names a source, not an output"):
        open_sinks(["null://", "/dev/video0"])
