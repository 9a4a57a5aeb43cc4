"""Frame sources addressed by URI, in the spirit of jetson-utils ``videoSource`` (torch-free).

One source is one stream (visible or infrared). URIs:

* ``path/to/dir`` or ``file://path/to/dir`` – an image folder, sorted by name;
* ``path/to/image.png`` – a single image;
* ``path/to/video.mp4`` (``.avi .mkv .mov`` ...) – a video file;
* ``v4l2:///dev/video0`` or ``/dev/video0`` – a V4L2 camera (``?format=Y16&width=640&height=512&fps=30``);
* ``csi://0`` – a Jetson CSI camera through ``nvarguscamerasrc`` (``?width=1280&height=720&fps=30&flip=0``);
* ``gst://<pipeline ending in appsink>`` – any GStreamer pipeline;
* ``rtsp://host/stream`` – a network stream.

Visible frames come out as RGB ``H×W×3`` uint8; infrared frames as grey ``H×W`` and keep a
16-bit sensor's depth (thermal gain control happens later, once, in :mod:`mrfs_edge.processing.thermal`).
Live sources stamp frames with the monotonic clock at capture and reconnect with backoff when
a camera drops out; file sources simply end.
"""
from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl

import cv2
import numpy as np

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.images import IMAGE_EXTENSIONS, read_infrared, read_visible

_S = TypeVar("_S", bound="Source")  # typing.Self is 3.11+: JetPack 5/6 run 3.8/3.10

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv")
ROLES = ("visible", "infrared")
IMAGE_SEQUENCE_FPS = 10.0   # nominal rate of folders and single images (timestamps, output videos)
MAX_BACKOFF_S = 8.0
# V4L2 pixel formats whose raw layout OpenCV documents when BGR conversion is off (grey or packed YUV).
RAW_GREY_FORMATS = ("Y16 ", "Y10 ", "Y12 ", "GREY", "Y800", "YUYV", "YUY2", "UYVY")


@dataclass
class Frame:
    """One captured image: RGB visible or grey (8/16-bit) infrared, with where it came from."""

    image: np.ndarray
    timestamp_s: float
    index: int
    name: str


def report(message: str) -> None:
    """Runtime notices (reconnects, skipped outputs) share the toolkit's one-line stderr style."""
    from mrfs_edge.core.log import announce

    announce(message)


def redact(uri: str) -> str:
    """The URI with any password hidden, so error messages and logs never leak camera credentials."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", uri)


def fourcc_text(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


class Source(ABC):
    """A stream of :class:`Frame` s; subclasses open, grab and release the device or files.

    ``read()`` returns ``None`` at the end of a file source. A live source that stops
    delivering is reported, released and reopened up to ``retries`` times with exponential
    backoff before :class:`SourceError` ends the run.
    """

    live = False

    def __init__(self, uri: str, role: str = "visible", retries: int = 5, backoff_s: float = 0.5) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        self.uri, self.role = uri, role
        self.retries, self.backoff_s = retries, backoff_s
        self.fps = IMAGE_SEQUENCE_FPS
        self.reconnects = 0
        self._index = 0
        self._opened = False
        self._closing = threading.Event()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.uri)!r}, role={self.role!r})"

    @abstractmethod
    def _open(self) -> None:
        """Open the device or files; raise :class:`SourceError` naming the URI on failure."""

    @abstractmethod
    def _grab(self) -> np.ndarray | None:
        """The next image in the role's layout, or ``None`` when none came."""

    def _release(self) -> None:
        """Free the device; nothing by default."""

    def _frame_name(self, index: int) -> str:
        """``<stream>_<index>``, safe as a file name (sinks name their outputs after frames)."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.uri.partition("?")[0].rstrip("/")).stem).strip("_.")
        return f"{stem or self.role}_{index:06d}"

    def _position_s(self, index: int) -> float:
        """Stream time of a file frame (live frames are stamped at capture instead)."""
        return index / self.fps

    def open(self: _S) -> _S:
        """Open (again) for reading; a closed file source starts over from its first frame."""
        if not self._opened:
            self._closing.clear()
            self._open()
            self._opened = True
            self._index = 0
        return self

    def interrupt(self) -> None:
        """Cut a reconnect backoff short (from another thread) so a stopping run does not wait."""
        self._closing.set()

    def close(self) -> None:
        self.interrupt()
        if self._opened:
            self._release()
            self._opened = False

    def read(self) -> Frame | None:
        self.open()
        image = self._grab()
        if image is None and self.live:
            image = self._reconnect()
        if image is None:
            return None
        index = self._index
        self._index += 1
        stamp = time.monotonic() if self.live else self._position_s(index)
        return Frame(image, stamp, index, self._frame_name(index))

    def _reconnect(self) -> np.ndarray | None:
        for attempt in range(1, self.retries + 1):
            delay = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            report(f"{redact(self.uri)}: no frame (camera disconnected?); reconnecting in {delay:.1f}s "
                   f"(attempt {attempt}/{self.retries})")
            if self._closing.wait(delay):
                return None
            self._release()
            try:
                self._open()
            except SourceError:
                continue
            image = self._grab()
            if image is not None:
                self.reconnects += 1
                return image
        if self._closing.is_set():
            return None
        raise SourceError(f"{redact(self.uri)}: stopped delivering frames; gave up after {self.retries} reconnect attempts")

    def __iter__(self) -> Iterator[Frame]:
        try:
            while (frame := self.read()) is not None:
                yield frame
        finally:
            self.close()

    def __enter__(self) -> "Source":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageFilesSource(Source):
    """An image folder (sorted by name) or a single image; frames are named by file stem."""

    def __init__(self, uri: str, role: str = "visible", fps: float = IMAGE_SEQUENCE_FPS) -> None:
        super().__init__(uri, role)
        self.path = Path(strip_file_scheme(uri))
        self.fps = fps
        self.paths: list[Path] = []

    def _open(self) -> None:
        if self.path.is_dir():
            self.paths = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.paths:
                raise SourceError(f"{self.uri}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        elif self.path.is_file():
            self.paths = [self.path]
        else:
            raise SourceError(f"{self.uri}: no such folder, image or video")

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.open().paths]

    def select(self, names: list[str]) -> None:
        """Keep only these stems, in this order (pairing by name); a missing one is an error."""
        by_stem = {p.stem: p for p in self.open().paths}
        missing = [n for n in names if n not in by_stem]
        if missing:
            raise SourceError(f"{self.path / missing[0]}.*: {self.role} partner missing for pair '{missing[0]}' "
                              f"({len(missing)} of {len(names)} missing)")
        self.paths = [by_stem[n] for n in names]

    def _grab(self) -> np.ndarray | None:
        if self._index >= len(self.paths):
            return None
        path = self.paths[self._index]
        return read_visible(path) if self.role == "visible" else read_infrared(path)

    def _frame_name(self, index: int) -> str:
        return self.paths[index].stem


class CaptureSource(Source):
    """Anything ``cv2.VideoCapture`` opens: video files, V4L2, GStreamer, RTSP.

    ``target`` is what VideoCapture is given (path, device, pipeline or URL); ``settings`` are
    ``(property, value)`` pairs applied after opening (V4L2 format, size, rate).
    ``capture_factory`` stands in for ``cv2.VideoCapture`` (tests use fakes).
    """

    def __init__(self, uri: str, role: str = "visible", *, target: str, live: bool, api: int = cv2.CAP_ANY,
                 settings: tuple[tuple[int, float], ...] = (), retries: int = 5, backoff_s: float = 0.5,
                 capture_factory: Callable[..., cv2.VideoCapture] = cv2.VideoCapture) -> None:
        super().__init__(uri, role, retries, backoff_s)
        self.live, self.target, self.api, self.settings = live, target, api, settings
        self._factory = capture_factory
        self._capture: cv2.VideoCapture | None = None
        self._fourcc = ""
        self._position = 0.0

    def _open(self) -> None:
        capture = self._factory(self.target, self.api)
        if not capture.isOpened():
            raise SourceError(f"{redact(self.uri)}: cannot open "
                              f"{'camera/stream (not connected, busy, or wrong device?)' if self.live else 'video (corrupt or unsupported codec?)'}")
        for prop, value in self.settings:
            capture.set(prop, value)
        if self.role == "infrared":
            capture = self._keep_raw_depth(capture)
        self.fps = capture.get(cv2.CAP_PROP_FPS) or IMAGE_SEQUENCE_FPS
        self._fourcc = fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
        self._capture = capture

    def _keep_raw_depth(self, capture: cv2.VideoCapture) -> cv2.VideoCapture:
        """Turn BGR conversion off where the raw layout is grey, so Y16 thermal keeps 16 bits.

        Cameras report their V4L2 pixel format; files report the decoder's pixel format
        (``Y800``/``Y1``+16 for grey FFV1), and only those are safe to read unconverted.
        """
        if self.live:
            if fourcc_text(capture.get(cv2.CAP_PROP_FOURCC)) in RAW_GREY_FORMATS:
                capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)
            return capture
        if fourcc_text(capture.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT)).startswith(("Y800", "GREY", "Y1")):
            capture.release()
            return self._factory(self.target, self.api, [cv2.CAP_PROP_CONVERT_RGB, 0])
        return capture

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _grab(self) -> np.ndarray | None:
        if self._capture is None:
            return None
        ok, image = self._capture.read()
        if not ok or image is None or image.size == 0:
            return None
        if not self.live:
            self._position = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if self.role == "visible":
            return visible_from_capture(image, self.uri)
        return infrared_from_capture(image, self._fourcc, self.uri)

    def _position_s(self, index: int) -> float:
        return self._position


def visible_from_capture(image: np.ndarray, uri: str) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise SourceError(f"{redact(uri)}: visible frames have {image.shape[2]} channels; expected colour")


def infrared_from_capture(image: np.ndarray, fourcc: str, uri: str) -> np.ndarray:
    """Grey ``H×W`` from whatever layout the capture delivered, 16-bit data left unaltered."""
    if image.ndim == 2 and image.shape[0] > 1:
        return image
    if image.ndim == 3 and image.shape[2] == 2:      # packed YUV: luma is the thermal image
        return np.ascontiguousarray(image[:, :, 1 if fourcc == "UYVY" else 0])
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY)
    raise SourceError(f"{redact(uri)}: cannot interpret raw {fourcc or 'unknown'} frames of shape {image.shape}; "
                      "ask for a grey format, e.g. ?format=Y16 or ?format=GREY")


def strip_file_scheme(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def csi_pipeline(sensor: str, options: dict[str, str]) -> str:
    """The usual Jetson ``nvarguscamerasrc`` → BGR appsink pipeline (latest frame only)."""
    width, height = options.get("width", "1280"), options.get("height", "720")
    return (f"nvarguscamerasrc sensor-id={sensor or 0} ! "
            f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={options.get('fps', '30')}/1, "
            f"format=NV12 ! nvvidconv flip-method={options.get('flip', '0')} ! video/x-raw, format=BGRx ! "
            "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


def v4l2_settings(options: dict[str, str]) -> tuple[tuple[int, float], ...]:
    """VideoCapture properties for ``?format=&width=&height=&fps=`` (format first: it resets the device)."""
    settings: list[tuple[int, float]] = []
    if "format" in options:
        settings.append((cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*options["format"].ljust(4)[:4])))
    for key, prop in (("width", cv2.CAP_PROP_FRAME_WIDTH), ("height", cv2.CAP_PROP_FRAME_HEIGHT),
                      ("fps", cv2.CAP_PROP_FPS)):
        if key in options:
            settings.append((prop, float(options[key])))
    return tuple(settings)


def _require_gstreamer(uri: str) -> None:
    if not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        raise SourceError(f"{redact(uri)}: this OpenCV was built without GStreamer (JetPack's OpenCV has it); "
                          "csi:// and gst:// need it")


def open_source(uri: str, role: str = "visible", retries: int = 5, backoff_s: float = 0.5) -> Source:
    """The source for a URI (not yet opened: ``open()`` or iteration raises :class:`SourceError`)."""
    scheme, _, rest = uri.partition("://") if "://" in uri else ("", "", uri)
    location, _, query = rest.partition("?")
    options = dict(parse_qsl(query))
    def live(target: str, api: int, settings: tuple[tuple[int, float], ...] = ()) -> CaptureSource:
        return CaptureSource(uri, role, target=target, live=True, api=api, settings=settings,
                             retries=retries, backoff_s=backoff_s)

    if scheme == "csi":
        _require_gstreamer(uri)
        return live(csi_pipeline(location, options), cv2.CAP_GSTREAMER)
    if scheme == "gst":
        _require_gstreamer(uri)
        return live(rest, cv2.CAP_GSTREAMER)
    if scheme in ("rtsp", "rtsps", "http", "https", "rtmp"):
        return live(uri, cv2.CAP_FFMPEG)
    if scheme == "v4l2" or (not scheme and location.startswith("/dev/video")):
        return live(location, cv2.CAP_V4L2, v4l2_settings(options))
    if scheme not in ("", "file"):
        raise SourceError(f"{redact(uri)}: unknown source scheme '{scheme}://' "
                          "(use a folder, image, video, v4l2://, csi://, gst:// or rtsp://)")
    path = Path(strip_file_scheme(uri))
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        if not path.is_file():
            raise SourceError(f"{uri}: no such video file")
        return CaptureSource(uri, role, target=str(path), api=cv2.CAP_FFMPEG, live=False)
    return ImageFilesSource(uri, role)


def take_pair(visible: deque[Frame], infrared: deque[Frame], tolerance_s: float) -> tuple[Frame, Frame] | None:
    """Pop the oldest visible/infrared frames closer than ``tolerance_s``; discard unmatchable ones.

    Both deques are in capture order. A head frame is discarded when it is too old for any
    partner still to come, or when the next frame of its stream is a closer match.
    """
    while visible and infrared:
        v, i = visible[0], infrared[0]
        if len(visible) > 1 and abs(visible[1].timestamp_s - i.timestamp_s) < abs(v.timestamp_s - i.timestamp_s):
            visible.popleft()
        elif len(infrared) > 1 and abs(infrared[1].timestamp_s - v.timestamp_s) < abs(i.timestamp_s - v.timestamp_s):
            infrared.popleft()
        elif abs(v.timestamp_s - i.timestamp_s) <= tolerance_s:
            return visible.popleft(), infrared.popleft()
        else:
            (visible if v.timestamp_s < i.timestamp_s else infrared).popleft()
    return None


class _LiveReader(threading.Thread):
    """Reads one live source as fast as it delivers into a short deque (oldest frames fall out)."""

    def __init__(self, source: Source, buffer: int, ready: threading.Condition) -> None:
        super().__init__(name=f"capture-{source.role}", daemon=True)
        self.source, self.ready = source, ready
        self.frames: deque[Frame] = deque(maxlen=buffer)
        self.error: BaseException | None = None
        self.ended = False
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and (frame := self.source.read()) is not None:
                with self.ready:
                    self.frames.append(frame)
                    self.ready.notify_all()
        except BaseException as exc:  # reported to the consumer thread, which re-raises it
            self.error = exc
        finally:
            with self.ready:
                self.ended = True
                self.ready.notify_all()


class PairedSource:
    """Visible/infrared frame pairs from two sources.

    Files and folders pair by position (folders on both sides: by file stem, as
    :class:`~mrfs_edge.io.pairs.PairFolder` does); live sources pair by capture time within
    ``tolerance_s``, each read in its own thread so one slow camera does not stall the other.
    """

    def __init__(self, visible: Source, infrared: Source, tolerance_s: float = 0.02, buffer: int = 4) -> None:
        if visible.live != infrared.live:
            raise SourceError(f"{redact(visible.uri)} + {redact(infrared.uri)}: cannot pair a live camera with a "
                              "file source (their clocks are unrelated)")
        self.visible, self.infrared = visible, infrared
        self.tolerance_s, self.buffer = tolerance_s, buffer
        self.live = visible.live
        self.unpaired = 0
        self._readers: list[_LiveReader] = []

    @property
    def fps(self) -> float:
        return self.visible.fps

    def open(self) -> "PairedSource":
        self.visible.open()
        self.infrared.open()
        if isinstance(self.visible, ImageFilesSource) and isinstance(self.infrared, ImageFilesSource) \
                and self.visible.path.is_dir() and self.infrared.path.is_dir():
            names = self.visible.names
            self.infrared.select(names)
        return self

    def close(self) -> None:
        """Stop the reader threads before releasing: releasing a capture mid-read can crash OpenCV."""
        for reader in self._readers:
            reader.stopping.set()
            reader.source.interrupt()
        for reader in self._readers:
            reader.join(timeout=2.0)
        if not any(reader.is_alive() for reader in self._readers):
            self.visible.close()
            self.infrared.close()

    def __iter__(self) -> Generator[tuple[Frame, Frame], None, None]:
        """Pairs until a source ends; closing the generator (or its end) releases both sources."""
        self.open()
        try:
            yield from (self._live_pairs() if self.live else self._file_pairs())
        finally:
            self.close()

    def _file_pairs(self) -> Iterator[tuple[Frame, Frame]]:
        while True:
            visible = self.visible.read()
            infrared = self.infrared.read() if visible is not None else None
            if visible is None or infrared is None:
                return
            yield visible, infrared

    def _live_pairs(self) -> Iterator[tuple[Frame, Frame]]:
        ready = threading.Condition()
        self._readers = [_LiveReader(s, self.buffer, ready) for s in (self.visible, self.infrared)]
        for reader in self._readers:
            reader.start()
        vis, ir = (r.frames for r in self._readers)
        while True:
            with ready:
                pair = None
                while pair is None:
                    before = len(vis) + len(ir)
                    pair = take_pair(vis, ir, self.tolerance_s)
                    self.unpaired += before - len(vis) - len(ir) - (2 if pair else 0)
                    failed = next((r for r in self._readers if r.ended), None)
                    if pair is None and failed is not None:
                        if failed.error is not None:
                            raise failed.error
                        return
                    if pair is None:
                        ready.wait(timeout=0.5)
            yield pair


def open_pair(visible_uri: str, infrared_uri: str, tolerance_s: float = 0.02, retries: int = 5,
              backoff_s: float = 0.5) -> PairedSource:
    return PairedSource(open_source(visible_uri, "visible", retries, backoff_s),
                        open_source(infrared_uri, "infrared", retries, backoff_s), tolerance_s)

