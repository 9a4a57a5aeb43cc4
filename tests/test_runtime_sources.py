"""URI frame sources: folders, images, videos, fake cameras, pairing, one-line errors."""
from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pytest

from mrfs_edge.assets import SAMPLES
from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.capture import (
    CaptureSource,
    ImageFilesSource,
    infrared_from_capture,
    v4l2_settings,
)
from mrfs_edge.io.factory import open_source
from mrfs_edge.io.images import read_infrared, read_visible
from mrfs_edge.io.pairing import PairedSource, open_pair, take_pair
from mrfs_edge.io.source import BadFrame, Frame, Source
from mrfs_edge.io.uri import parse_uri, redact

NAMES = ["00147D", "00508D", "00530D"]


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def write_video(path: Path, frames: list[np.ndarray], grey: bool = False, depth: int = cv2.CV_8U) -> Path:
    """Lossless FFV1 video (this OpenCV's FFmpeg writes it; MJPG/mp4v would change pixels)."""
    height, width = frames[0].shape[:2]
    params = [cv2.VIDEOWRITER_PROP_IS_COLOR, 0 if grey else 1, cv2.VIDEOWRITER_PROP_DEPTH, depth]
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 10, (width, height), params)
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_folder_source_reads_rgb_visible_and_grey_infrared_named_by_stem():
    visible = list(open_source(str(SAMPLES / "vi"), "visible"))
    infrared = list(open_source(f"file://{SAMPLES / 'ir'}", "infrared"))
    assert [f.name for f in visible][:3] == NAMES
    assert np.array_equal(visible[0].image, read_visible(SAMPLES / "vi" / "00147D.png"))
    assert infrared[0].image.ndim == 2 and infrared[0].image.dtype == np.uint8
    assert [f.index for f in visible] == list(range(len(visible)))
    assert all(a.timestamp_s < b.timestamp_s for a, b in zip(visible, visible[1:]))


def test_single_image_is_one_frame():
    frames = list(open_source(str(SAMPLES / "ir" / "00147D.png"), "infrared"))
    assert len(frames) == 1 and frames[0].name == "00147D"


def test_sixteen_bit_thermal_passes_through_folders_and_videos(tmp_path):
    ir8 = read_infrared(SAMPLES / "ir" / "00147D.png")
    ir16 = ir8.astype(np.uint16) * 200 + 1000
    folder = tmp_path / "ir16"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), ir16)
    assert np.array_equal(next(iter(open_source(str(folder), "infrared"))).image, ir16)
    video = write_video(tmp_path / "ir16.mkv", [ir16], grey=True, depth=cv2.CV_16U)
    frame = next(iter(open_source(str(video), "infrared")))
    assert frame.image.dtype == np.uint16 and np.array_equal(frame.image, ir16)


def test_videos_decode_exactly_to_the_folder_frames(tmp_path):
    vis_bgr = [cv2.imread(str(SAMPLES / "vi" / f"{n}.png")) for n in NAMES]
    ir = [read_infrared(SAMPLES / "ir" / f"{n}.png") for n in NAMES]
    vis_video = write_video(tmp_path / "vi.mkv", vis_bgr)
    ir_video = write_video(tmp_path / "ir.mkv", ir, grey=True)
    pairs = list(open_pair(str(vis_video), str(ir_video)))
    assert len(pairs) == len(NAMES)
    for (visible, infrared), bgr, grey in zip(pairs, vis_bgr, ir):
        assert np.array_equal(visible.image, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        assert np.array_equal(infrared.image, grey)
    assert pairs[1][0].timestamp_s == pytest.approx(0.1)


def test_folder_pairs_match_by_stem_and_missing_partner_is_one_line(tmp_path):
    vis, ir = tmp_path / "vi", tmp_path / "ir"
    vis.mkdir(), ir.mkdir()
    for name in NAMES:
        shutil.copy(SAMPLES / "vi" / f"{name}.png", vis)
    for name in reversed(NAMES + ["01110N"]):          # an extra infrared frame is ignored
        shutil.copy(SAMPLES / "ir" / f"{name}.png", ir)
    pairs = list(open_pair(str(vis), str(ir)))
    assert [(v.name, i.name) for v, i in pairs] == [(n, n) for n in NAMES]
    (ir / "00508D.png").unlink()
    with pytest.raises(SourceError) as exc:
        list(open_pair(str(vis), str(ir)))
    assert "00508D" in one_line(exc) and "infrared partner missing" in str(exc.value)


@pytest.mark.parametrize("uri, needle", [
    ("/no/such/folder", "no such folder"),
    ("/no/such/clip.mp4", "no such video"),
    ("ftp://host/stream", "unknown source scheme"),
    ("csi://0", "GStreamer"),
])
def test_unopenable_sources_are_one_line_errors_naming_the_uri(uri, needle):
    with pytest.raises(SourceError) as exc:
        open_source(uri).open()
    assert uri in one_line(exc) and needle in str(exc.value)


def test_malformed_uri_fails_when_the_source_is_made_not_when_opened():
    with pytest.raises(SourceError) as exc:
        open_source("v4l2:///dev/video0?width=wide", "infrared")          # no .open(): parsing alone fails
    assert one_line(exc) == "v4l2:///dev/video0?width=wide: option width='wide' is not a positive integer"
    with pytest.raises(SourceError) as exc:
        open_pair(str(SAMPLES / "vi"), "display://0")
    assert one_line(exc).startswith("display://0: 'display://' names an output, not a source")


def test_empty_folder_and_dead_camera_are_one_line_errors(tmp_path):
    with pytest.raises(SourceError) as exc:
        open_source(str(tmp_path)).open()
    assert "no images" in one_line(exc)
    with pytest.raises(SourceError) as exc:
        open_source("v4l2:///dev/video99?format=Y16", "infrared").open()
    assert "/dev/video99" in one_line(exc) and "cannot open camera" in str(exc.value)


def test_corrupt_video_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SourceError) as exc:
        open_source(str(bad)).open()
    assert str(bad) in one_line(exc)


class FakeCapture:
    """A VideoCapture stand-in: delivers ``frames`` frames, then fails every read."""

    def __init__(self, frames: int, value: int = 0, opens: bool = True) -> None:
        self.frames, self.value, self.opens = frames, value, opens
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:
        return self.opens

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def read(self):
        if self.frames <= 0:
            return False, None
        self.frames -= 1
        self.value += 1
        return True, np.full((4, 6, 3), self.value % 256, np.uint8)

    def release(self) -> None:
        self.frames = 0


def factory(*captures: FakeCapture):
    queue = deque(captures)
    return lambda *args: queue.popleft() if queue else FakeCapture(0, opens=False)


def test_live_source_dying_mid_stream_is_reported_and_reconnected(caplog):
    source = CaptureSource("v4l2:///dev/fake", target="/dev/fake", live=True, backoff_s=0.001,
                           capture_factory=factory(FakeCapture(3), FakeCapture(0, opens=False), FakeCapture(2, 100)))
    frames = []
    with pytest.raises(SourceError) as exc:
        for frame in source:
            frames.append(frame)
    assert len(frames) == 5 and source.reconnects == 1
    assert frames[3].image[0, 0, 0] == 101                      # the frames after reconnecting
    assert "gave up after 5 reconnect attempts" in one_line(exc)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 + 5               # attempt 2/5 reconnected (1/5 did not open), then 5 gave up
    assert "reconnecting in" in warnings[0] and "attempt 1/5" in warnings[0] and "/dev/fake" in warnings[0]
    assert "attempt 2/5" in warnings[1] and "attempt 5/5" in warnings[-1]


def test_file_source_ending_mid_stream_ends_cleanly():
    source = CaptureSource("clip.mp4", target="clip.mp4", live=False, capture_factory=factory(FakeCapture(3)))
    assert len(list(source)) == 3 and source.reconnects == 0


def test_take_pair_matches_nearest_within_tolerance():
    def frames(*stamps: float) -> deque[Frame]:
        return deque(Frame(np.zeros(1), t, i, str(t)) for i, t in enumerate(stamps))

    vis, ir = frames(0.000, 0.033, 0.066, 0.100), frames(0.030, 0.070, 0.300)
    first = take_pair(vis, ir, 0.02)
    assert (first[0].timestamp_s, first[1].timestamp_s) == (0.033, 0.030)   # 0.000 was a worse match
    second = take_pair(vis, ir, 0.02)
    assert (second[0].timestamp_s, second[1].timestamp_s) == (0.066, 0.070)
    assert take_pair(vis, ir, 0.02) is None and list(ir)[0].timestamp_s == 0.300  # 0.100 cannot pair: dropped
    assert not vis


class FakeCamera(Source):
    """A live source producing numbered frames every ``interval_s`` until ``count`` is reached."""

    live = True

    def __init__(self, role: str, count: int, interval_s: float = 0.005) -> None:
        super().__init__(f"fake://{role}", role, retries=0)
        self.count, self.interval_s = count, interval_s

    def _open(self) -> None:
        pass

    def _grab(self):
        if self._index >= self.count:
            return None
        time.sleep(self.interval_s)
        shape = (8, 8, 3) if self.role == "visible" else (8, 8)
        return np.full(shape, self._index % 256, np.uint8)


def test_live_pairs_come_from_reader_threads_within_tolerance():
    source = PairedSource(FakeCamera("visible", 20), FakeCamera("infrared", 20), tolerance_s=0.05)
    pairs = []
    with pytest.raises(SourceError):        # the fakes then "die" with no retries left
        for pair in source:
            pairs.append(pair)
    assert len(pairs) >= 10
    assert all(abs(v.timestamp_s - i.timestamp_s) <= 0.05 for v, i in pairs)
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("capture-"))


def test_live_and_file_sources_cannot_be_paired():
    with pytest.raises(SourceError) as exc:
        PairedSource(FakeCamera("visible", 1), open_source(str(SAMPLES / "ir"), "infrared"))
    assert "live camera with a file" in one_line(exc)


def test_raw_thermal_layouts_become_grey_and_unknown_ones_fail():
    yuyv = np.dstack([np.full((2, 4), 7, np.uint8), np.full((2, 4), 128, np.uint8)])
    assert np.all(infrared_from_capture(yuyv, "YUYV", "x") == 7)
    assert np.all(infrared_from_capture(yuyv[:, :, ::-1], "UYVY", "x") == 7)
    y16 = np.full((2, 4), 40000, np.uint16)
    assert infrared_from_capture(y16, "Y16 ", "x") is y16
    with pytest.raises(SourceError) as exc:
        infrared_from_capture(np.zeros((1, 100), np.uint8), "MJPG", "v4l2:///dev/video1")
    assert "?format=Y16" in one_line(exc)


def test_v4l2_query_options_and_redaction():
    settings = dict(v4l2_settings(parse_uri("v4l2:///dev/video1?format=Y16&width=640&fps=9", "source").options))
    assert settings[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"Y16 ")
    assert settings[cv2.CAP_PROP_FRAME_WIDTH] == 640 and settings[cv2.CAP_PROP_FPS] == 9
    assert list(dict(v4l2_settings(parse_uri("/dev/video1?width=640&format=Y16", "source").options)))[0] \
        == cv2.CAP_PROP_FOURCC
    assert redact("rtsp://admin:secret@10.0.0.2/stream") == "rtsp://admin:***@10.0.0.2/stream"
    assert isinstance(open_source("/dev/video0"), CaptureSource)
    assert isinstance(open_source(str(SAMPLES / "vi")), ImageFilesSource)


def test_skipped_bad_file_frame_drops_its_partner_so_pairs_stay_aligned(tmp_path):
    names = sorted(p.stem for p in (SAMPLES / "vi").glob("*.png"))[:5]
    for sub in ("vi", "ir"):
        (tmp_path / sub).mkdir()
        for name in names:
            (tmp_path / sub / f"{name}.png").write_bytes((SAMPLES / sub / f"{name}.png").read_bytes())
    (tmp_path / "vi" / f"{names[1]}.png").write_bytes(b"not a png")
    (tmp_path / "ir" / f"{names[3]}.png").write_bytes(b"")
    source = open_pair(str(tmp_path / "vi"), str(tmp_path / "ir"), on_bad_frame="skip")
    pairs = [(v.name, i.name) for v, i in source]
    assert pairs == [(names[0], names[0]), (names[2], names[2]), (names[4], names[4])]
    assert source.skipped == 2 and [(b.stream, b.name) for b in source.skipped_frames] == [
        ("visible", names[1]), ("infrared", names[3])]
    with pytest.raises(BadFrame, match=f"{names[1]}.png: unreadable or corrupt image"):
        list(open_pair(str(tmp_path / "vi"), str(tmp_path / "ir")))          # files stop by default


def test_without_gstreamers_binding_rtsp_falls_back_to_opencv_and_csi_says_what_to_install(monkeypatch):
    """The core install (no python3-gi): RTSP still opens through OpenCV's FFmpeg; csi:// names the packages."""
    from mrfs_edge.io import gst

    monkeypatch.setitem(sys.modules, "gi", None)                  # import gi raises ImportError
    monkeypatch.setattr(gst, "_modules", {})
    monkeypatch.setattr(gst, "_problem", [])
    source = open_source("rtsp://admin:secret@127.0.0.1:9/stream")
    assert isinstance(source, CaptureSource) and source.api == cv2.CAP_FFMPEG and source.live
    has_backend = cv2.videoio_registry.hasBackend
    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", lambda api: api != cv2.CAP_GSTREAMER and has_backend(api))
    with pytest.raises(SourceError) as exc:
        open_source("gst://videotestsrc ! appsink")
    assert one_line(exc).startswith("gst://videotestsrc ! appsink: GStreamer's Python binding (gi) is not importable: "
                                    "install python3-gi gir1.2-gstreamer-1.0")
    assert str(exc.value).endswith("and this OpenCV has no GStreamer backend (JetPack's OpenCV has it)")
