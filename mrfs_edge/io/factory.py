"""``open_source``: the source for a URI, in the spirit of jetson-utils ``videoSource::Create``.

The URI forms and their options are parsed (and checked) by :func:`mrfs_edge.io.uri.parse_uri`;
this module maps each scheme to the source that reads it, and picks the reader:

* ``csi://``, ``gst://`` and ``rtsp(s)://``: GStreamer's own binding (:mod:`mrfs_edge.io.gst`)
  where it is importable, for its buffer timestamps (pairing by capture time) and its bounded
  waits (OpenCV's FFmpeg read blocks for as long as a dead RTSP server keeps the socket); else
  OpenCV's GStreamer (JetPack's OpenCV) or FFmpeg backend;
* ``v4l2://``, ``http(s)://``, ``rtmp://``: OpenCV's V4L2 / FFmpeg backend, which pip's OpenCV
  has (and which keeps a Y16 camera's raw depth); GStreamer only where this OpenCV lacks it;
* files: OpenCV (videos) or the image reader (folders, images).
"""
from __future__ import annotations

import cv2

from mrfs_edge.core.errors import SourceError
from mrfs_edge.io import gst
from mrfs_edge.io.capture import (
    CaptureSource,
    ImageFilesSource,
    csi_pipeline,
    opencv_has,
    v4l2_settings,
)
from mrfs_edge.io.source import Source, Stream
from mrfs_edge.io.uri import NETWORK_SCHEMES, parse_uri, redact

OPENCV_BACKEND_NAMES = {cv2.CAP_GSTREAMER: "GStreamer", cv2.CAP_FFMPEG: "FFmpeg", cv2.CAP_V4L2: "V4L2"}


def open_source(uri: str, role: Stream = "visible", retries: int = 5, backoff_s: float = 0.5) -> Source:
    """The source for a URI (not yet opened: ``open()`` or iteration raises :class:`SourceError`).

    A malformed URI (unknown scheme, bad option) fails here, before anything is opened, and so
    does a GStreamer pipeline that does not parse or names an element that is not installed.
    """
    parsed = parse_uri(uri, "source")

    def camera(target: str, api: int, settings: tuple[tuple[int, float], ...] = ()) -> CaptureSource:
        return CaptureSource(uri, role, target=target, live=True, api=api, settings=settings,
                             retries=retries, backoff_s=backoff_s)

    def pipeline(text: str, live: bool | None, properties: dict[str, dict[str, object]] | None = None) -> Source:
        return gst.GstSource(uri, role, pipeline=text, live=live, properties=properties, retries=retries,
                             backoff_s=backoff_s)

    def neither(problem: str, api: int) -> SourceError:
        return SourceError(f"{redact(uri)}: {problem}; and this OpenCV has no {OPENCV_BACKEND_NAMES[api]} backend "
                           f"({'JetPack' if api == cv2.CAP_GSTREAMER else 'pip'}'s OpenCV has it)")

    scheme = parsed.scheme
    if scheme == "bag":
        raise SourceError(f"{redact(uri)}: bag:// names a visible/infrared pair, not one stream: give it as "
                          "runtime/run.py --pair (mrfs_edge.io.bag.open_bag_pair)")
    if scheme in ("csi", "gst", "rtsp", "rtsps"):
        needs: tuple[str, ...] = ()
        properties: dict[str, dict[str, object]] | None = None
        live: bool | None = True
        if scheme == "csi":
            text = gst.csi_pipeline(parsed.location, parsed.options)
        elif scheme == "gst":
            text, live = parsed.location, None          # decided from the pipeline's source elements
        else:
            (text, properties), needs = gst.stream_pipeline(parsed.location), ("rtspsrc", "decodebin")
        problem = gst.gstreamer_problem(needs)
        if problem is None:
            return pipeline(text, live, properties)
        api = cv2.CAP_FFMPEG if scheme.startswith("rtsp") else cv2.CAP_GSTREAMER
        if not opencv_has(api):
            raise neither(problem, api)
        if scheme == "csi":
            return camera(csi_pipeline(parsed.location, parsed.options), api)
        return camera(parsed.location, api)
    if scheme in NETWORK_SCHEMES or scheme == "v4l2":
        api = cv2.CAP_V4L2 if scheme == "v4l2" else cv2.CAP_FFMPEG
        if opencv_has(api):
            return camera(parsed.location, api, v4l2_settings(parsed.options) if scheme == "v4l2" else ())
        problem = gst.gstreamer_problem(("v4l2src",) if scheme == "v4l2" else ("uridecodebin",))
        if problem is not None:
            raise neither(problem, api)
        if scheme == "v4l2":
            return pipeline(gst.v4l2_pipeline(parsed.location, parsed.options), True)
        text, properties = gst.stream_pipeline(parsed.location)
        return pipeline(text, True, properties)
    if parsed.is_video:
        if not parsed.path.is_file():
            raise SourceError(f"{uri}: no such video file")
        return CaptureSource(uri, role, target=str(parsed.path), api=cv2.CAP_FFMPEG, live=False)
    return ImageFilesSource(uri, role, path=parsed.path)
