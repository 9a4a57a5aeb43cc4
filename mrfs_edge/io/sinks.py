"""Output sinks addressed by URI, in the spirit of jetson-utils ``videoOutput``.

* ``display://0`` – an OpenCV window (skipped, with one message, where there is no display);
* ``null://`` – counts frames and drops them: the runtime's cost without any output's;
* ``out.mp4`` / ``out.avi`` / ``out.mkv`` – a video of the composite, written under a temporary
  name and renamed when the run ends, so a crash never leaves a truncated file that looks done;
  with ``segment_s``, a series of such videos (``out_000000.mkv``, ``out_000001.mkv``, ...), each
  closed and renamed after ``segment_s`` seconds, so a power cut loses at most the open one;
* ``path/to/dir`` or ``file://path/to/dir`` – one composite image per frame, plus, with
  ``save_raw``, the class-index label PNG and the fused PNG (each written atomically);
* ``bag://results.mcap`` – labels, fused images and composites as ROS 2 image topics of a new
  MCAP file (:class:`mrfs_edge.io.bag.McapSink`; the ``bag`` extra).

URIs are parsed by :func:`mrfs_edge.io.uri.parse_uri`, the same parser the sources use.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mrfs_edge.core.errors import SinkError
from mrfs_edge.io.images import write_image
from mrfs_edge.io.uri import parse_uri

LOG = logging.getLogger(__name__)

# Codecs tried per container, first that opens wins; FFV1 in .mkv is lossless.
VIDEO_CODECS = {".mp4": ("mp4v", "avc1"), ".m4v": ("mp4v", "avc1"), ".avi": ("MJPG", "XVID"),
                ".mkv": ("FFV1", "MJPG"), ".mov": ("mp4v", "MJPG")}


@dataclass
class Rendered:
    """One processed frame as the sinks receive it (RGB composite and raw results)."""

    name: str
    composite: np.ndarray          # RGB uint8
    labels: np.ndarray             # H×W class indices
    fused: np.ndarray              # RGB H×W×3 uint8
    stamp_ns: int | None = None    # the visible frame's Frame.stamp_ns (recorded sources), for timestamped outputs


class Sink(ABC):
    uri: str = ""
    wants_stop = False             # a display closed by the user asks the run to stop

    @abstractmethod
    def write(self, frame: Rendered) -> None: ...

    def close(self) -> None:
        """Finalise the output; nothing by default."""


def display_available() -> bool:
    """A window can be shown: a display server is set and this OpenCV has a GUI backend."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("mrfs-edge", cv2.WINDOW_NORMAL)
    except cv2.error:
        return False
    return True


class DisplaySink(Sink):
    """An OpenCV window; ``q`` or Esc stops the run."""

    def __init__(self, uri: str = "display://0", title: str = "mrfs-edge") -> None:
        self.uri, self.title = uri, title

    def write(self, frame: Rendered) -> None:
        cv2.imshow(self.title, cv2.cvtColor(frame.composite, cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.wants_stop = True

    def close(self) -> None:
        cv2.destroyWindow(self.title)


class NullSink(Sink):
    """Counts frames and drops them, so a benchmark measures the pipeline without an output's cost."""

    def __init__(self, uri: str = "null://") -> None:
        self.uri = uri
        self.frames = 0

    def write(self, frame: Rendered) -> None:
        self.frames += 1


class VideoFileSink(Sink):
    """The composite as a video; opened at the first frame (its size), renamed into place on close."""

    def __init__(self, path: str | os.PathLike[str], fps: float, codec: str | None = None) -> None:
        self.path = Path(path)
        self.uri = str(self.path)
        self.fps = fps if fps > 0 else 10.0
        suffix = self.path.suffix.lower()
        self.codecs = (codec,) if codec else VIDEO_CODECS.get(suffix, ("mp4v", "MJPG"))
        self.partial = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._writer: cv2.VideoWriter | None = None

    def _open(self, size: tuple[int, int]) -> cv2.VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for codec in self.codecs:
            # Any backend: a Jetson OpenCV without FFmpeg still writes MJPG .avi with its built-in writer.
            writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*codec), self.fps, size)
            if writer.isOpened():
                return writer
            writer.release()
        raise SinkError(f"{self.path}: cannot write video (tried codecs {', '.join(self.codecs)}); "
                        "try .avi (MJPG) or an image folder")

    def write(self, frame: Rendered) -> None:
        height, width = frame.composite.shape[:2]
        if self._writer is None or self.size is None:
            self.size = (width, height)
            self._writer = self._open(self.size)
        image = frame.composite if (width, height) == self.size else cv2.resize(frame.composite, self.size)
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        os.replace(self.partial, self.path)


class SegmentedVideoSink(Sink):
    """The composite as closed videos of ``segment_s`` seconds each, for recordings that must survive a power cut.

    A video is only playable once its writer has closed it (an MP4 without its index, a
    Matroska file without its cues), so a long drive in one file is lost whole when the power
    goes. Here each segment is a :class:`VideoFileSink`: written under a hidden temporary name
    and renamed to ``<stem>_<NNNNNN><suffix>`` when closed, so every file with a final name is
    complete and at most the open segment is lost. Segments are cut by wall time (what a power
    cut loses), and numbering continues after the highest segment already in the folder, so a
    restarted recorder never overwrites the drive before the restart.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, segment_s: float, codec: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not segment_s > 0:
            raise ValueError(f"segment_s must be positive, not {segment_s}")
        self.path = Path(path)
        self.uri = str(self.path)
        self.fps, self.segment_s, self.codec, self.clock = fps, segment_s, codec, clock
        self.frames = 0
        self.segments: list[Path] = []         # closed, under their final names
        self._current: VideoFileSink | None = None
        self._opened_at = 0.0
        self._next = self._first_free_index()

    def segment_path(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.stem}_{number:06d}{self.path.suffix}")

    def _first_free_index(self) -> int:
        pattern = re.compile(rf"{re.escape(self.path.stem)}_(\d{{6}}){re.escape(self.path.suffix)}")
        folder = self.path.parent
        names = (p.name for p in folder.iterdir()) if folder.is_dir() else iter(())
        return max((int(m.group(1)) for name in names if (m := pattern.fullmatch(name))), default=-1) + 1

    def write(self, frame: Rendered) -> None:
        if self._current is not None and self.clock() - self._opened_at >= self.segment_s:
            self._close_segment()
        if self._current is None:
            self._current = VideoFileSink(self.segment_path(self._next), self.fps, self.codec)
            self._next += 1
            self._opened_at = self.clock()
        self._current.write(frame)
        self.frames += 1

    def _close_segment(self) -> None:
        segment, self._current = self._current, None
        if segment is not None:
            segment.close()
            self.segments.append(segment.path)
            LOG.debug("closed segment %s (%d frames)", segment.path, segment.frames)

    def close(self) -> None:
        self._close_segment()


class ImageFolderSink(Sink):
    """Per-frame composite ``<name>.jpg``; with ``save_raw`` also ``label/<name>.png`` and ``fused/<name>.png``."""

    def __init__(self, folder: str | os.PathLike[str], save_raw: bool = False) -> None:
        self.folder = Path(folder)
        self.uri = str(self.folder)
        self.save_raw = save_raw
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"{self.folder}: exists and is not a folder")

    def write(self, frame: Rendered) -> None:
        write_image(self.folder / f"{frame.name}.jpg", frame.composite)
        if self.save_raw:
            write_image(self.folder / "label" / f"{frame.name}.png", frame.labels.astype(np.uint8), rgb=False)
            write_image(self.folder / "fused" / f"{frame.name}.png", frame.fused)


def open_sink(uri: str, fps: float = 10.0, save_raw: bool = False, segment_s: float | None = None) -> Sink | None:
    """The sink for a URI, or ``None`` for a display that cannot be shown here (said once).

    ``segment_s`` makes a video output a :class:`SegmentedVideoSink`; other outputs ignore it.
    """
    parsed = parse_uri(uri, "sink")
    if parsed.scheme == "display":
        if display_available():
            return DisplaySink(uri)
        LOG.warning("%s: no display available here (no DISPLAY, or OpenCV without GUI); not showing frames", uri)
        return None
    if parsed.scheme == "null":
        return NullSink(uri)
    if parsed.scheme == "bag":
        from mrfs_edge.io.bag import open_mcap_sink  # imports mcap (the bag extra) only when writing one

        return open_mcap_sink(parsed.path, parsed.options)
    codec = parsed.options.get("codec")
    if parsed.is_video:
        if segment_s is not None:
            return SegmentedVideoSink(parsed.path, fps, segment_s, None if codec is None else str(codec))
        return VideoFileSink(parsed.path, fps, None if codec is None else str(codec))
    if codec is not None:
        raise SinkError(f"{uri}: option codec is for video files (.mp4, .avi, .mkv, ...), not an image folder")
    return ImageFolderSink(parsed.path, save_raw)


def open_sinks(uris: Sequence[str], fps: float = 10.0, save_raw: bool = False,
               segment_s: float | None = None) -> list[Sink]:
    return [sink for uri in uris if (sink := open_sink(uri, fps, save_raw, segment_s)) is not None]
