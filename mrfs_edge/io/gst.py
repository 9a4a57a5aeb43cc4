"""Frames from GStreamer through its own Python binding (PyGObject) and an ``appsink``.

Why not OpenCV's GStreamer backend: pip's OpenCV is built without it, so ``csi://`` and
``gst://`` would only ever work with JetPack's OpenCV; and even there ``VideoCapture.read``
gives neither the buffer's timestamp nor a bounded wait. Here each frame carries the capture
time GStreamer stamped on its buffer (PTS, plus the pipeline's base time, on the pipeline clock,
mapped to :func:`time.monotonic`, the clock :mod:`mrfs_edge.io.pairing` compares), frames are
pulled with ``try-pull-sample`` in short slices so a stop or a dead camera never hangs a thread,
and end-of-stream and errors come from the pipeline's bus with the element that raised them.

The binding: ``python3-gi`` with ``gir1.2-gstreamer-1.0`` (and ``gir1.2-gst-plugins-base-1.0``
for frames with padded rows). JetPack ships them for its system Python, so a Jetson venv sees
them when made with
``python3 -m venv --system-site-packages``; on Debian/Ubuntu ``apt-get install python3-gi
gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0`` (``.ci/system-packages.sh`` also links the
binding into a venv of another CPython build of the same version). ``gi`` is imported on first
use only, so this module imports anywhere.

Which URIs come here is :func:`mrfs_edge.io.factory.open_source`'s choice; this module builds
the pipelines (``csi://`` over ``nvarguscamerasrc``, RTSP over ``rtspsrc``, V4L2 over
``v4l2src``, other streams over ``uridecodebin``) and reads any pipeline that ends in, or gets,
an appsink.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io.source import IMAGE_SEQUENCE_FPS, Source, Stream
from mrfs_edge.io.uri import OptionValue, redact

LOG = logging.getLogger(__name__)

INSTALL_HINT = "install python3-gi gir1.2-gstreamer-1.0 (JetPack has them)"
VIDEO_HINT = "install gir1.2-gst-plugins-base-1.0 (GstVideo)"
SINK_NAME = "mrfs_appsink"
SOURCE_NAME = "mrfs_source"
RTSP_LATENCY_MS = 200        # rtspsrc's jitter buffer: enough for a LAN camera, small against a 33 ms frame budget
APPSINK_MAX_BUFFERS = 4      # bounded: a stalled consumer holds at most this many frames, then upstream waits
POLL_S = 0.1                 # slice of one try_pull_sample: how quickly a stop is noticed
FRAME_TIMEOUT_S = 3.0        # a live source silent this long is treated as disconnected (reconnect)
FIRST_FRAME_TIMEOUT_S = 10.0  # cameras and RTSP sessions take seconds to deliver their first frame
# What the appsink asks videoconvert for: RGB visible (the frame layout), 8- or 16-bit grey infrared
# (videoconvert passes a Y16 camera's depth through and makes 8-bit grey from anything else).
ROLE_CAPS: dict[str, str] = {"visible": "video/x-raw, format=RGB", "infrared": "video/x-raw, format={ GRAY8, GRAY16_LE }"}
# Raw formats a user's appsink may deliver: (bytes per pixel, channel order of the colour ones).
PIXEL_FORMATS: dict[str, tuple[int, str]] = {
    "RGB": (3, "RGB"), "BGR": (3, "BGR"), "RGBx": (4, "RGB"), "RGBA": (4, "RGB"), "BGRx": (4, "BGR"),
    "BGRA": (4, "BGR"), "GRAY8": (1, ""), "GRAY16_LE": (2, ""),
}
# Source elements that are live although GStreamer only says so once they are playing.
NETWORK_ELEMENTS = ("rtspsrc", "rtmpsrc", "rtmp2src", "srtsrc", "srtclientsrc", "ristsrc")
NETWORK_URI = re.compile(r"^(rtsps?|rtmps?|srt|rist|udp|https?)://", re.IGNORECASE)
# nvvidconv's flip-method numbers in videoflip's numbering (the stand-in cameras rotate like a CSI camera).
VIDEOFLIP_METHOD = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 7, 6: 5, 7: 6}
# V4L2 FourCCs (the uri's ``format``) as GStreamer caps.
V4L2_CAPS = {"Y16": "video/x-raw, format=GRAY16_LE", "GREY": "video/x-raw, format=GRAY8",
             "Y800": "video/x-raw, format=GRAY8", "YUYV": "video/x-raw, format=YUY2",
             "YUY2": "video/x-raw, format=YUY2", "UYVY": "video/x-raw, format=UYVY",
             "NV12": "video/x-raw, format=NV12", "MJPG": "image/jpeg"}

_lock = threading.Lock()
_modules: dict[str, Any] = {}
_problem: list[str] = []


def _load() -> str | None:
    """Import and initialise GStreamer once; the reason it cannot be used, or ``None``."""
    with _lock:
        if _modules or _problem:
            return _problem[0] if _problem else None
        try:
            import gi
        except ImportError:
            _problem.append(f"GStreamer's Python binding (gi) is not importable: {INSTALL_HINT}")
            return _problem[0]
        try:
            gi.require_version("Gst", "1.0")
            gi.require_version("GstBase", "1.0")
            from gi.repository import Gst, GstBase
        except (ImportError, ValueError) as exc:
            _problem.append(f"GStreamer's introspection data is missing ({exc}): {INSTALL_HINT}")
            return _problem[0]
        ok, _ = Gst.init_check(None)
        if not ok:
            _problem.append("GStreamer did not initialise (Gst.init_check failed)")
            return _problem[0]
        # GstVideo (gir1.2-gst-plugins-base-1.0, not on every Jetson image) only reads the row
        # layout of padded buffers; the appsink is driven through its action signals, without GstApp.
        try:
            gi.require_version("GstVideo", "1.0")
            from gi.repository import GstVideo
        except (ImportError, ValueError):
            GstVideo = None
        _modules.update(Gst=Gst, GstBase=GstBase, GstVideo=GstVideo)
        return None


def gstreamer_problem(elements: tuple[str, ...] = ()) -> str | None:
    """Why GStreamer cannot read these elements here (binding or plugin missing), or ``None``.

    Callers choose a backend with it and tests skip (or, in CI, fail) with its text.
    """
    problem = _load()
    if problem is not None:
        return problem
    Gst = _modules["Gst"]
    missing = [name for name in elements if Gst.ElementFactory.find(name) is None]
    if missing:
        return f"GStreamer element{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} " \
               f"not installed (check with gst-inspect-1.0 {missing[0]})"
    return None


def _gst(uri: str) -> Any:
    """The ``Gst`` module; :class:`SourceError` naming the URI and the packages when it is missing."""
    problem = _load()
    if problem is not None:
        raise SourceError(f"{redact(uri)}: {problem}")
    return _modules["Gst"]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fps_fraction(fps: OptionValue) -> str:
    fraction = Fraction(float(fps)).limit_denominator(1001)
    return f"{fraction.numerator}/{fraction.denominator}"


def csi_pipeline(sensor: str, options: Mapping[str, OptionValue], camera: str | None = None) -> str:
    """The pipeline of ``csi://<sensor>?width=&height=&fps=&flip=`` up to the appsink.

    ``camera`` replaces the Jetson's Argus camera (``nvarguscamerasrc`` into NVMM memory,
    ``nvvidconv`` flipping back to system memory) by another source element, with ``videoflip``
    doing the flip: tests run the rest of this code path on ``videotestsrc``.
    """
    width, height, fps = options.get("width", 1280), options.get("height", 720), options.get("fps", 30)
    flip = int(options.get("flip", 0))
    if camera is None:
        return (f"nvarguscamerasrc sensor-id={sensor or 0} ! video/x-raw(memory:NVMM), width={width}, "
                f"height={height}, framerate={fps}/1, format=NV12 ! nvvidconv flip-method={flip} ! "
                "video/x-raw, format=BGRx")
    return (f"{camera} ! video/x-raw, width={width}, height={height}, framerate={fps}/1 ! "
            f"videoflip video-direction={VIDEOFLIP_METHOD[flip]}")


def v4l2_pipeline(device: str, options: Mapping[str, OptionValue]) -> str:
    """``v4l2src`` with the uri's ``format``/``width``/``height``/``fps`` as caps (MJPG decoded)."""
    fourcc = str(options.get("format", "")).strip().upper()
    if fourcc and fourcc not in V4L2_CAPS:
        raise SourceError(f"v4l2://{device}: format {fourcc} has no GStreamer mapping here "
                          f"(known: {', '.join(V4L2_CAPS)})")
    fields = [V4L2_CAPS[fourcc] if fourcc else "video/x-raw"]
    fields += [f"{key}={options[key]}" for key in ("width", "height") if key in options]
    if "fps" in options:
        fields.append(f"framerate={_fps_fraction(options['fps'])}")
    text = f"v4l2src name={SOURCE_NAME} device={device}"
    if len(fields) > 1 or fourcc:
        text += f" ! {', '.join(fields)}"
    return text + (" ! jpegdec" if fourcc == "MJPG" else "")


def stream_pipeline(url: str) -> tuple[str, dict[str, dict[str, object]]]:
    """An RTSP (``rtspsrc``, :data:`RTSP_LATENCY_MS`) or other network stream (``uridecodebin``).

    The URL is set as a property after parsing rather than written into the text, so no
    character of it (or of its password) can break the pipeline's syntax.
    """
    if url.lower().startswith(("rtsp://", "rtsps://")):
        return (f"rtspsrc name={SOURCE_NAME} latency={RTSP_LATENCY_MS} ! decodebin",
                {SOURCE_NAME: {"location": url}})
    return f"uridecodebin name={SOURCE_NAME}", {SOURCE_NAME: {"uri": url}}


def with_appsink(pipeline: str, role: Stream) -> str:
    """The pipeline as given when its last element is an appsink, else with the role's appsink appended."""
    last = pipeline.rsplit("!", 1)[-1].strip()
    if re.match(r"appsink(\s|$)", last):
        return pipeline
    return (f"{pipeline} ! videoconvert ! {ROLE_CAPS[role]} ! appsink name={SINK_NAME} "
            f"max-buffers={APPSINK_MAX_BUFFERS} drop=false sync=false")


def _elements(iterator: Any) -> list[Any]:
    """A ``Gst.Iterator`` as a list (restarted if the bin changes meanwhile)."""
    Gst = _modules["Gst"]
    found: list[Any] = []
    while True:
        result, element = iterator.next()
        if result == Gst.IteratorResult.OK:
            found.append(element)
        elif result == Gst.IteratorResult.RESYNC:
            iterator.resync()
            found.clear()
        else:
            return found


def _looks_live(pipeline: Any) -> bool:
    """Whether the pipeline's frames come from a live source (a camera, a network stream).

    Decided without starting anything, since a live source must not be opened just to ask: base
    sources say so from creation (``v4l2src``, ``nvarguscamerasrc``, ``videotestsrc
    is-live=true``); network bins only once playing, so they are recognised by element or URI.
    """
    GstBase = _modules["GstBase"]
    for element in _elements(pipeline.iterate_recurse()):
        factory = element.get_factory()
        name = factory.get_name() if factory is not None else ""
        if isinstance(element, GstBase.BaseSrc):
            live = element.is_live        # the struct field in PyGObject 3.42, the method where it is shadowed less
            if live() if callable(live) else live:
                return True
        if name in NETWORK_ELEMENTS:
            return True
        if name.startswith(("uridecodebin", "playbin")) and NETWORK_URI.match(element.get_property("uri") or ""):
            return True
    return False


class GstSource(Source):
    """One GStreamer pipeline read through an appsink, frame by frame.

    ``pipeline`` is gst-launch text; without an appsink at its end one is appended that asks
    videoconvert for the role's layout (RGB visible, 8/16-bit grey infrared). A user's appsink
    keeps its caps, or is given :data:`PIXEL_FORMATS` (what this class converts), and gets
    :data:`APPSINK_MAX_BUFFERS` and ``sync=false``. ``properties`` are set on named elements
    after parsing (URLs, devices).
    ``live`` is decided from the pipeline when ``None``.

    The pipeline is parsed at construction, so a typo or a missing plugin is a one-line error
    before any device is opened. Live sources (cameras, streams) stamp frames with their buffer's
    capture time and treat end-of-stream, a bus error or :data:`FRAME_TIMEOUT_S` without a frame as
    a disconnect (reconnect with backoff, :class:`~mrfs_edge.io.source.Source`); the first frame
    may take :data:`FIRST_FRAME_TIMEOUT_S`, and an error before any frame was ever delivered ends
    the source at once (a wrong URL or device, not a dropout). Other pipelines end at
    end-of-stream, raise on errors and stamp frames with their stream time.
    """

    def __init__(self, uri: str, role: Stream = "visible", *, pipeline: str, live: bool | None = None,
                 properties: Mapping[str, Mapping[str, object]] | None = None, retries: int = 5,
                 backoff_s: float = 0.5, frame_timeout_s: float = FRAME_TIMEOUT_S,
                 first_frame_timeout_s: float = FIRST_FRAME_TIMEOUT_S) -> None:
        super().__init__(uri, role, retries, backoff_s)
        self.pipeline = with_appsink(pipeline, role)
        self.properties = {name: dict(values) for name, values in (properties or {}).items()}
        self.frame_timeout_s, self.first_frame_timeout_s = frame_timeout_s, first_frame_timeout_s
        probe = self._parse()
        self.live = _looks_live(probe) if live is None else live
        self._pipeline: Any = None
        self._sink: Any = None
        self._bus: Any = None
        self._delivered = False      # any frame ever: an error before the first one is not a dropout
        self._since_open = 0         # frames since the last (re)open: the first may be slow
        self._clock_offset_s: float | None = None
        self._stamp_s = 0.0
        self._position = 0.0

    @property
    def _shown(self) -> str:
        return redact(self.uri)

    def _parse(self) -> Any:
        Gst = _gst(self.uri)
        try:
            pipeline = Gst.parse_launch(self.pipeline)
        except Exception as exc:  # noqa: BLE001 - GLib.GError: its domain/code say what is wrong
            raise SourceError(f"{self._shown}: {self._parse_problem(exc)}") from None
        if not isinstance(pipeline, Gst.Pipeline):       # a single element parses to itself
            wrapped = Gst.Pipeline.new(None)
            wrapped.add(pipeline)
            pipeline = wrapped
        for name, values in self.properties.items():
            element = pipeline.get_by_name(name)
            if element is None:
                raise SourceError(f"{self._shown}: the pipeline has no element named {name!r}")
            for key, value in values.items():
                element.set_property(key, value)
        return pipeline

    def _parse_problem(self, exc: BaseException) -> str:
        Gst = _modules["Gst"]
        message = _one_line(getattr(exc, "message", str(exc)))
        if getattr(exc, "domain", "") == "gst_parse_error" and exc.code == int(Gst.ParseError.NO_SUCH_ELEMENT):
            name = re.search(r'"([^"]+)"', message)
            element = name.group(1) if name else message
            return f"GStreamer element '{element}' is not installed (check with gst-inspect-1.0 {element})"
        return f"GStreamer pipeline does not parse ({message}): {self.pipeline}"

    def _appsink(self, pipeline: Any) -> Any:
        sink = pipeline.get_by_name(SINK_NAME)
        if sink is None:
            sinks = [e for e in _elements(pipeline.iterate_sinks())
                     if e.get_factory() is not None and e.get_factory().get_name() == "appsink"]
            if len(sinks) != 1:
                raise SourceError(f"{self._shown}: the pipeline must end in one appsink (found {len(sinks)})")
            sink = sinks[0]
            if sink.get_property("caps") is None:      # what upstream fixed (a capsfilter) must still fit
                formats = ", ".join(PIXEL_FORMATS)
                sink.set_property("caps", _modules["Gst"].Caps.from_string(f"video/x-raw, format={{ {formats} }}"))
            sink.set_property("max-buffers", APPSINK_MAX_BUFFERS)
            sink.set_property("sync", False)
        sink.set_property("emit-signals", False)
        return sink

    def _open(self) -> None:
        Gst = _gst(self.uri)
        pipeline = self._parse()
        sink = self._appsink(pipeline)
        bus = pipeline.get_bus()
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            problem = self._bus_problem(bus) or "the pipeline refused to start"
            pipeline.set_state(Gst.State.NULL)
            raise SourceError(f"{self._shown}: cannot start: {problem}")
        self._pipeline, self._sink, self._bus = pipeline, sink, bus
        self._since_open = 0
        self._clock_offset_s = None

    def _release(self) -> None:
        if self._pipeline is not None:
            self._pipeline.set_state(_modules["Gst"].State.NULL)
        self._pipeline = self._sink = self._bus = None

    def _bus_problem(self, bus: Any) -> str | None:
        """The first error on the bus as ``<element>: <message>``; ``None`` when there is none."""
        Gst = _modules["Gst"]
        message = bus.pop_filtered(Gst.MessageType.ERROR)
        if message is None:
            return None
        error, debug = message.parse_error()
        if "not-negotiated" in (debug or ""):
            detail = " (the appsink's caps do not fit: end the pipeline with 'videoconvert ! appsink' or leave " \
                     "the appsink out)"
        else:        # the debug text's last line is the cause, e.g. "Failed to connect. (Generic error)"
            cause = _one_line((debug or "").rsplit(":\n", 1)[-1]) if debug and ":\n" in debug else ""
            detail = f" ({cause})" if cause and cause not in error.message else ""
        element = message.src
        name = "pipeline" if element is None else element.get_name()
        if element is not None and name == SOURCE_NAME and element.get_factory() is not None:
            name = element.get_factory().get_name()     # 'rtspsrc', not the name this module gave it
        return redact(f"{name}: {_one_line(error.message)}{detail}")     # a camera's password may be quoted

    def _grab(self) -> np.ndarray | None:
        # Local references: a close() from another thread (after interrupt()) may release meanwhile.
        pipeline, sink, bus = self._pipeline, self._sink, self._bus
        if pipeline is None:
            return None
        Gst = _modules["Gst"]
        timeout = self.first_frame_timeout_s if self._since_open == 0 else self.frame_timeout_s
        deadline = time.monotonic() + timeout
        while not self._closing.is_set():
            sample = sink.emit("try-pull-sample", int(POLL_S * Gst.SECOND))
            if sample is not None:
                image = self._image(sample, pipeline)
                self._delivered = True
                self._since_open += 1
                return image
            if self._closing.is_set():     # stopping: a flushing pipeline's EOS or error is no dropout
                return None
            problem = self._bus_problem(bus)
            if problem is not None:
                self._ended(f"GStreamer error from {problem}", error=True)
                return None
            if sink.get_property("eos"):
                self._ended("end of stream", error=False)
                return None
            if time.monotonic() > deadline:
                self._ended(f"no frame for {timeout:.1f}s", error=not self.live)   # a file does not stall
                return None
        return None

    def _ended(self, why: str, error: bool) -> None:
        """Say how the stream stopped: a warning for a live one that delivered before (it will be
        reconnected), :class:`SourceError` for an error otherwise, nothing for a plain end."""
        if self.live and self._delivered:
            LOG.warning("%s: %s", self._shown, why)
        elif error:
            raise SourceError(f"{self._shown}: {why}")

    def _image(self, sample: Any, pipeline: Any) -> np.ndarray:
        """The sample's pixels in the role's layout; its capture (live) or stream time kept for the frame."""
        structure = sample.get_caps().get_structure(0)
        fmt, width, height = structure.get_value("format"), structure.get_value("width"), structure.get_value("height")
        if fmt not in PIXEL_FORMATS:
            raise SourceError(f"{self._shown}: the appsink delivers {fmt}; give it one of "
                              f"{', '.join(PIXEL_FORMATS)} (or leave the appsink out)")
        if self._since_open == 0:
            ok, num, den = structure.get_fraction("framerate")
            self.fps = num / den if ok and num > 0 and den > 0 else IMAGE_SEQUENCE_FPS
        buffer = sample.get_buffer()
        self._stamp(sample, buffer, pipeline)
        size, channel_order = PIXEL_FORMATS[fmt]
        offset, stride = self._row_layout(buffer, width * size, height)
        # extract_dup: one copy as bytes on every PyGObject (MapInfo.data's type has varied between versions)
        data = np.frombuffer(buffer.extract_dup(offset, stride * height), np.uint8)
        rows = data.reshape(height, stride)[:, :width * size]
        if size == 2:
            image = np.array(rows).view("<u2").astype(np.uint16, copy=False).reshape(height, width)
        else:
            image = np.array(rows).reshape((height, width) if size == 1 else (height, width, size))
        return self._in_role_layout(image, fmt, channel_order)

    def _row_layout(self, buffer: Any, row_bytes: int, height: int) -> tuple[int, int]:
        """``(offset, stride)`` of the first plane: from the buffer's GstVideoMeta (pitch-aligned
        rows of hardware converters) when it has one, else GStreamer's default (rows padded to 4 bytes)."""
        GstVideo = _modules["GstVideo"]
        meta = GstVideo.buffer_get_video_meta(buffer) if GstVideo is not None else None
        if meta is not None:
            return meta.offset[0], meta.stride[0]
        stride = (row_bytes + 3) // 4 * 4
        if buffer.get_size() != stride * height:
            if GstVideo is None:
                raise SourceError(f"{self._shown}: frames of {buffer.get_size()} bytes do not have GStreamer's "
                                  f"default row layout ({stride} × {height}); to read them, {VIDEO_HINT}")
            stride = buffer.get_size() // height
        return 0, stride

    def _in_role_layout(self, image: np.ndarray, fmt: str, channel_order: str) -> np.ndarray:
        if image.ndim == 3:
            rgb = image[:, :, :3] if channel_order == "RGB" else image[:, :, 2::-1]
            if self.role == "visible":
                return np.ascontiguousarray(rgb)
            weights = np.array([77, 150, 29], np.uint32)      # BT.601 luma in 1/256 steps
            return ((rgb.astype(np.uint32) @ weights + 128) >> 8).astype(np.uint8)
        if self.role == "infrared":
            return image
        if fmt == "GRAY16_LE":
            raise SourceError(f"{self._shown}: visible frames are 16-bit grey; expected colour")
        return np.repeat(image[:, :, None], 3, axis=2)

    def _stamp(self, sample: Any, buffer: Any, pipeline: Any) -> None:
        """Capture time (live: base time + running time on the pipeline clock, as monotonic seconds)
        or stream time (files) of the buffer; the moment of pulling when it has no timestamp."""
        Gst = _modules["Gst"]
        pts = buffer.pts
        if pts == Gst.CLOCK_TIME_NONE:
            self._stamp_s, self._position = time.monotonic(), self._index / self.fps
            return
        segment = sample.get_segment()
        if not self.live:
            self._position = segment.to_stream_time(Gst.Format.TIME, pts) / Gst.SECOND
            return
        clock = pipeline.get_clock()
        if self._clock_offset_s is None:
            monotonic = isinstance(clock, Gst.SystemClock) and clock.get_property("clock-type") == Gst.ClockType.MONOTONIC
            self._clock_offset_s = 0.0 if monotonic or clock is None else time.monotonic() - clock.get_time() / Gst.SECOND
        running = segment.to_running_time(Gst.Format.TIME, pts)
        self._stamp_s = (pipeline.get_base_time() + running) / Gst.SECOND + self._clock_offset_s

    def _capture_time_s(self) -> float:
        return self._stamp_s

    def _frame_name(self, index: int) -> str:
        """``<stream>_<index>`` for a ``gst://`` pipeline (its text makes no file name)."""
        return f"{self.role}_{index:06d}" if self.uri.startswith("gst://") else super()._frame_name(index)

    def _position_s(self, index: int) -> float:
        return self._position
