"""The concrete sources and their pixel formats: image files, and anything ``cv2.VideoCapture`` opens.

Visible frames come out as RGB ``H×W×3`` uint8; infrared frames as grey ``H×W`` and keep a
16-bit sensor's depth (thermal gain control happens later, once, in :mod:`mrfs_edge.processing.thermal`).
The CSI pipeline and V4L2 settings turn a parsed URI's options into what OpenCV is given.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io import gst
from mrfs_edge.io.images import IMAGE_EXTENSIONS, read_infrared, read_visible
from mrfs_edge.io.source import IMAGE_SEQUENCE_FPS, Source, Stream
from mrfs_edge.io.uri import OptionValue, redact

# V4L2 pixel formats whose raw layout OpenCV documents when BGR conversion is off (grey or packed YUV).
RAW_GREY_FORMATS = ("Y16 ", "Y10 ", "Y12 ", "GREY", "Y800", "YUYV", "YUY2", "UYVY")


def fourcc_text(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


class ImageFilesSource(Source):
    """An image folder (sorted by name) or a single image; frames are named by file stem."""

    def __init__(self, uri: str, role: Stream = "visible", fps: float = IMAGE_SEQUENCE_FPS, *,
                 path: Path) -> None:
        super().__init__(uri, role)
        self.path = path
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

    def __init__(self, uri: str, role: Stream = "visible", *, target: str, live: bool, api: int = cv2.CAP_ANY,
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


def csi_pipeline(sensor: str, options: Mapping[str, OptionValue]) -> str:
    """The Jetson camera (:func:`mrfs_edge.io.gst.csi_pipeline`) into OpenCV's BGR appsink (latest frame only)."""
    return (f"{gst.csi_pipeline(sensor, options)} ! videoconvert ! video/x-raw, format=BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def v4l2_settings(options: Mapping[str, OptionValue]) -> tuple[tuple[int, float], ...]:
    """VideoCapture properties for ``?format=&width=&height=&fps=`` (format first: it resets the device)."""
    settings: list[tuple[int, float]] = []
    if "format" in options:
        settings.append((cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*str(options["format"]).ljust(4)[:4])))
    for key, prop in (("width", cv2.CAP_PROP_FRAME_WIDTH), ("height", cv2.CAP_PROP_FRAME_HEIGHT),
                      ("fps", cv2.CAP_PROP_FPS)):
        if key in options:
            settings.append((prop, float(options[key])))
    return tuple(settings)


def opencv_has(api: int) -> bool:
    """Whether this OpenCV build has a VideoCapture backend (pip's has FFmpeg and V4L2, not GStreamer)."""
    return bool(cv2.videoio_registry.hasBackend(api))
