"""GStreamer sources on real pipelines: videotestsrc as the camera, a file through decodebin.

Torch-free. Needs GStreamer's Python binding and Debian's base/good/libav plugins
(``.ci/system-packages.sh``): without them these tests skip, naming what is missing, except in
CI (``MRFS_REQUIRE_GSTREAMER=1``) where they fail.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io import gst
from mrfs_edge.io.factory import open_source
from mrfs_edge.io.gst import GstSource, csi_pipeline, gstreamer_problem, v4l2_pipeline
from mrfs_edge.io.uri import parse_uri

SIZE = "width=320, height=240"
ELEMENTS = ("videotestsrc", "appsink", "videoconvert", "videoflip", "decodebin", "filesrc", "matroskademux",
            "avdec_ffv1", "v4l2src")


@pytest.fixture()
def gstreamer() -> None:
    problem = gstreamer_problem(ELEMENTS)
    if problem is not None:
        if os.environ.get("MRFS_REQUIRE_GSTREAMER") == "1":
            pytest.fail(f"MRFS_REQUIRE_GSTREAMER=1 but {problem}")
        pytest.skip(problem)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_pipeline_without_appsink_gets_one_and_frames_carry_stream_time_until_eos(gstreamer):
    source = open_source(f"gst://videotestsrc pattern=red num-buffers=12 ! video/x-raw, {SIZE}, framerate=30/1")
    assert isinstance(source, GstSource) and not source.live      # videotestsrc is not live by default
    frames = list(source)
    assert len(frames) == 12 and source.reconnects == 0              # EOS ended it
    assert [f.index for f in frames] == list(range(12)) and frames[0].name == "visible_000000"
    image = frames[0].image
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert np.all(image[:, :, 0] == 255) and np.all(image[:, :, 1:] == 0)      # RGB order: red first
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 30 for i in range(12)], abs=1e-6)
    assert source.fps == 30


@pytest.mark.parametrize("fmt", ["BGR", "BGRx", "RGBA", "GRAY8"])
def test_a_users_appsink_keeps_its_caps_and_padded_rows_are_cut(gstreamer, fmt):
    # 322 pixels of 3 bytes make 966-byte rows, padded to 968 by GStreamer: the stride must be honoured.
    source = open_source(f"gst://videotestsrc pattern=blue num-buffers=2 ! video/x-raw, width=322, height=10 ! "
                         f"videoconvert ! video/x-raw, format={fmt} ! appsink")
    image = list(source)[1].image
    assert image.shape == (10, 322, 3)
    if fmt == "GRAY8":
        assert np.all(image == image[:, :, :1]) and 0 < image[0, 0, 0] < 255    # grey repeated to three channels
    else:
        assert np.all(image[:, :, 2] == 255) and np.all(image[:, :, :2] == 0)   # blue stays in the B channel


@pytest.mark.parametrize("gstvideo", [True, False])
def test_rows_laid_out_by_a_video_meta_are_read_at_its_offset_and_stride(gstreamer, monkeypatch, gstvideo):
    """Hardware converters (nvvidconv) hand out pitch-aligned rows described by a GstVideoMeta;
    without GstVideo's introspection data (some Jetson images) they are refused, naming the package."""
    if not gstvideo:
        monkeypatch.setitem(gst._modules, "GstVideo", None)
    source = open_source("gst://appsrc name=camera format=time "
                         "caps=video/x-raw,format=RGB,width=5,height=3,framerate=30/1 ! appsink").open()
    from gi.repository import GstVideo  # versioned by io.gst; the test builds its buffer with it

    Gst = gst._modules["Gst"]
    offset, stride = 8, 32
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    raw = np.full(offset + 3 * stride, 0xEE, np.uint8)                  # padding that must not show
    for row in range(3):
        raw[offset + row * stride:offset + row * stride + 15] = pixels[row].ravel()
    buffer = Gst.Buffer.new_wrapped(raw.tobytes())
    buffer.pts, buffer.duration = 0, Gst.SECOND // 30
    GstVideo.buffer_add_video_meta_full(buffer, GstVideo.VideoFrameFlags.NONE, GstVideo.VideoFormat.RGB, 5, 3, 1,
                                        [offset, 0, 0, 0], [stride, 0, 0, 0])
    camera = source._pipeline.get_by_name("camera")          # the running pipeline's appsrc
    camera.emit("push-buffer", buffer)
    camera.emit("end-of-stream")
    if not gstvideo:
        with pytest.raises(SourceError) as exc:
            list(source)
        assert one_line(exc).endswith("to read them, install gir1.2-gst-plugins-base-1.0 (GstVideo)")
        return
    frames = list(source)
    assert len(frames) == 1 and np.array_equal(frames[0].image, pixels)

def only_image(uri: str) -> np.ndarray:
    frames = list(open_source(uri, "infrared"))
    assert len(frames) == 1
    return frames[0].image


def test_infrared_keeps_sixteen_bits_and_turns_colour_grey(gstreamer):
    sixteen = only_image(f"gst://videotestsrc pattern=white num-buffers=1 ! video/x-raw, format=GRAY16_LE, {SIZE}")
    # videotestsrc's white is video-range 235, 235 × 257 in 16 bits: the full 16-bit value, not scaled to 8
    assert sixteen.dtype == np.uint16 and sixteen.shape == (240, 320) and np.all(sixteen == 235 * 257)
    eight = only_image(f"gst://videotestsrc pattern=white num-buffers=1 ! video/x-raw, format=I420, {SIZE}")
    assert eight.dtype == np.uint8 and eight.shape == (240, 320) and np.all(eight == 235)   # I420 white: video range


@pytest.mark.parametrize("flip, shape", [(0, (240, 320, 3)), (1, (320, 240, 3))])
def test_csi_code_path_on_a_live_test_camera_stamps_capture_times_at_the_frame_rate(gstreamer, flip, shape):
    """Everything of csi:// but nvarguscamerasrc/nvvidconv: the URI's options, the appended appsink,
    live reading and capture timestamps from the buffers."""
    uri = f"csi://0?width=320&height=240&fps=30&flip={flip}"
    options = parse_uri(uri, "source").options
    source = GstSource(uri, pipeline=csi_pipeline("0", options, camera="videotestsrc is-live=true"), live=True)
    frames = []
    for frame in source:
        frames.append((frame, time.monotonic()))
        if len(frames) == 10:
            break
    stamps = [f.timestamp_s for f, _ in frames]
    assert all(f.image.shape == shape for f, _ in frames)          # flip 1 turns the image a quarter
    assert np.diff(stamps) == pytest.approx(1 / 30, abs=1e-3)       # from buffer PTS, not from when we read
    # The capture time is on the monotonic clock pairing uses: before the frame was read, not long before.
    assert all(stamp <= read and read - stamp < 1.0 for stamp, (_, read) in zip(stamps, frames))
    assert source.fps == 30


def test_the_argus_pipeline_is_what_a_jetson_runs():
    text = csi_pipeline("1", parse_uri("csi://1?width=1920&height=1080&fps=60&flip=2", "source").options)
    assert text.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=1920, height=1080, "
                           "framerate=60/1, format=NV12 ! nvvidconv flip-method=2")


def test_a_live_pipeline_that_ends_is_reconnected_and_counted(gstreamer, caplog):
    source = open_source(f"gst://videotestsrc is-live=true num-buffers=3 ! video/x-raw, {SIZE}, framerate=30/1",
                         retries=2, backoff_s=0.05)
    assert source.live                                            # is-live=true: decided from the pipeline
    frames = []
    for frame in source:
        frames.append(frame)
        if len(frames) == 7:
            break
    assert source.reconnects == 2                                  # after frames 3 and 6
    stamps = [f.timestamp_s for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))          # no frame twice, none back in time
    assert sum("end of stream" in r.getMessage() for r in caplog.records) == 2


def test_a_video_file_through_decodebin_decodes_exactly(gstreamer, tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(5)]
    path = tmp_path / "clip.mkv"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 10, (320, 240))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    source = open_source(f"gst://filesrc location={path} ! decodebin")
    read = list(source)
    assert not source.live and len(read) == 5
    for got, bgr in zip(read, frames):
        assert np.array_equal(got.image, bgr[:, :, ::-1])          # lossless FFV1: the very pixels, as RGB
    assert [f.timestamp_s for f in read] == pytest.approx([i / 10 for i in range(5)], abs=1e-3)
    assert source.fps == 10


@pytest.mark.parametrize("pipeline, needle", [
    ("videotestsrc ! nosuchelement ! appsink", "GStreamer element 'nosuchelement' is not installed"),
    ("videotestsrc ! ! appsink", "GStreamer pipeline does not parse (syntax error)"),
])
def test_a_bad_pipeline_is_a_one_line_error_when_the_source_is_made(gstreamer, pipeline, needle):
    with pytest.raises(SourceError) as exc:
        open_source(f"gst://{pipeline}")
    assert one_line(exc).startswith(f"gst://{pipeline}: {needle}")


def test_an_appsink_fed_the_wrong_format_says_how_to_fix_it(gstreamer):
    source = open_source(f"gst://videotestsrc num-buffers=2 ! video/x-raw, format=I420, {SIZE} ! appsink")
    with pytest.raises(SourceError) as exc:
        list(source)
    assert "end the pipeline with 'videoconvert ! appsink'" in one_line(exc)


def test_a_missing_camera_device_is_a_one_line_error_at_open(gstreamer):
    source = GstSource("v4l2:///dev/video99?format=Y16", "infrared",
                       pipeline=v4l2_pipeline("/dev/video99", {"format": "Y16", "width": 160}), live=True)
    with pytest.raises(SourceError) as exc:
        source.open()
    assert one_line(exc).startswith("v4l2:///dev/video99?format=Y16: cannot start: v4l2src: ")
    assert "/dev/video99" in str(exc.value)


@pytest.mark.parametrize("stop", ["interrupt", "close"])
def test_stop_returns_while_a_live_camera_is_between_frames(gstreamer, caplog, stop):
    """One frame every 10 s: a reader waiting for the second returns once the source is
    interrupted, or closed from another thread (which releases the pipeline under the reader)."""
    source = open_source(f"gst://videotestsrc is-live=true ! video/x-raw, {SIZE}, framerate=1/10")
    frames, first = [], threading.Event()

    def read() -> None:
        for frame in source:
            frames.append(frame)
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(10)
    getattr(source, stop)()
    reader.join(timeout=5)
    assert not reader.is_alive() and len(frames) == 1
    assert not [r for r in caplog.records if r.levelname == "WARNING"]     # a stop is no disconnect to report


def test_without_the_binding_csi_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gi", None)                  # import gi raises ImportError
    monkeypatch.setattr(gst, "_modules", {})
    monkeypatch.setattr(gst, "_problem", [])
    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", lambda api: False)
    with pytest.raises(SourceError) as exc:
        open_source("csi://0")
    assert one_line(exc) == ("csi://0: GStreamer's Python binding (gi) is not importable: install python3-gi "
                             "gir1.2-gstreamer-1.0 (JetPack has them); and this OpenCV has no GStreamer backend "
                             "(JetPack's OpenCV has it)")
